"""`python -m payments`: serve payments on its database (KEEL_DATABASE_URL, else SQLite in
its state folder), migrated at start-up when KEEL_MIGRATE=true."""

import keel
from keel.data import prepare

from payments.service import PaymentService
from payments.store import SqlStore


def main() -> None:
    db = prepare("payments")
    keel.serve([PaymentService(SqlStore(db))])


if __name__ == "__main__":
    main()
