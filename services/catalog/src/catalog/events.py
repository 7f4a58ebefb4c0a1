"""The orders' events, handled: OrderPlaced and OrderCancelled keep the units-sold read model
(catalog.domain.count_sold) in the transaction of the event's inbox row, so each counts once."""

from __future__ import annotations

import keel.events
from acme.catalog.v1.catalog_keel import CatalogServiceSubscriber
from acme.orders.v1 import orders_pb2

from catalog.domain import count_sold
from catalog.store import SqlTransaction


def _lines(lines: list[orders_pb2.OrderLine]) -> list[tuple[str, int]]:
    return [(line.product_id, line.quantity) for line in lines]


class CatalogEvents(CatalogServiceSubscriber):
    """Units sold per product: a placed order adds its lines, a cancelled one takes them away."""

    async def on_order_placed(
        self, event: orders_pb2.OrderPlaced, context: keel.events.EventContext
    ) -> None:
        await count_sold(SqlTransaction(context.session), _lines(list(event.lines)))

    async def on_order_cancelled(
        self, event: orders_pb2.OrderCancelled, context: keel.events.EventContext
    ) -> None:
        await count_sold(SqlTransaction(context.session), _lines(list(event.lines)), sign=-1)
