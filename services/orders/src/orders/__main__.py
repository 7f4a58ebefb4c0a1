"""`python -m orders`: serve orders on its database (KEEL_DATABASE_URL, else SQLite in its
state folder), migrated at start-up when KEEL_MIGRATE=true. With KEEL_NATS_URL the outbox
relay runs beside the server and publishes OrderPlaced and OrderCancelled; without it they
wait in the outbox until orders runs with a broker. Catalog and payments are found through
discovery."""

import sys

import keel
from acme.orders.v1 import orders_keel
from keel.data import prepare
from keel.runtime import config

from orders.service import OrderService
from orders.store import SqlStore


def main() -> None:
    db = prepare("orders")
    background = []
    if config.current().nats_url:
        from keel.events import Relay  # noqa: PLC0415 (NATS: only with a broker)

        events = (orders_keel.ORDER_PLACED, orders_keel.ORDER_CANCELLED)
        background.append(Relay(db, publishes=events))
    else:
        print(
            "orders: KEEL_NATS_URL is not set: events wait in the outbox for a broker",
            file=sys.stderr,
        )
    keel.serve([OrderService(SqlStore(db))], background=background)


if __name__ == "__main__":
    main()
