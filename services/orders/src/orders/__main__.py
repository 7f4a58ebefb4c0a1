"""`python -m orders`: serve orders on its database (KEEL_DATABASE_URL, else SQLite in its
state folder), migrated at start-up when KEEL_MIGRATE=true. With KEEL_NATS_URL the outbox
relay runs beside the server and publishes the events the proto declares (OrderPlaced,
OrderCancelled); without it they wait in the outbox until orders runs with a broker. The
placing and cancelling sagas a stopped process left are resumed at start-up
(keel.saga.Recovery). Catalog and payments are found through discovery. Its own settings
(currency, limits, page sizes) come from ORDERS_* (orders.settings)."""

import keel
from acme.orders.v1 import orders_keel
from keel.data import prepare

from orders.service import OrderService
from orders.settings import OrdersSettings
from orders.store import SqlStore


def main() -> None:
    settings = OrdersSettings()  # an invalid ORDERS_* value stops start-up here
    db = prepare("orders")
    events = keel.events.background(db, publishers=[orders_keel.OrderServicePublisher])
    service = OrderService(SqlStore(db), orders_settings=settings)
    keel.serve([service], background=[*events, service.recovery])  # + the sagas, resumed


if __name__ == "__main__":
    main()
