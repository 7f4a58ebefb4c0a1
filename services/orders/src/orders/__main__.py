"""`python -m orders`: serve orders on its database (KEEL_DATABASE_URL, else SQLite in its
state folder), migrated at start-up when KEEL_MIGRATE=true. With KEEL_NATS_URL the outbox
relay runs beside the server and publishes the events the proto declares (OrderPlaced,
OrderCancelled); without it they wait in the outbox until orders runs with a broker. Catalog
and payments are found through discovery."""

import keel
from acme.orders.v1 import orders_keel
from keel.data import prepare

from orders.service import OrderService
from orders.store import SqlStore


def main() -> None:
    db = prepare("orders")
    events = keel.events.background(db, publishers=[orders_keel.OrderServicePublisher])
    keel.serve([OrderService(SqlStore(db))], background=events)


if __name__ == "__main__":
    main()
