"""`python -m payments`: serve payments on its database (KEEL_DATABASE_URL, else SQLite in
its state folder), migrated at start-up when KEEL_MIGRATE=true, with its own settings from
PAYMENTS_* (payments.settings)."""

import keel
from keel.data import prepare

from payments.service import PaymentService
from payments.settings import PaymentsSettings
from payments.store import SqlStore


def main() -> None:
    settings = PaymentsSettings()  # an invalid PAYMENTS_* value stops start-up here
    db = prepare("payments")
    keel.serve([PaymentService(SqlStore(db), settings)])


if __name__ == "__main__":
    main()
