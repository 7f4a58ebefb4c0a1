"""In-memory storage for orders, with change notification for WatchOrder."""

from __future__ import annotations

import asyncio

from acme.orders.v1 import orders_pb2


class MemoryStore:
    """Orders by id, the id of each (customer, request id), and a condition per change."""

    def __init__(self) -> None:
        self.orders: dict[str, orders_pb2.Order] = {}
        self.requests: dict[tuple[str, str], str] = {}
        self.changed = asyncio.Condition()

    def get(self, order_id: str) -> orders_pb2.Order | None:
        return self.orders.get(order_id)

    def by_request(self, customer_id: str, request_id: str) -> orders_pb2.Order | None:
        order_id = self.requests.get((customer_id, request_id))
        return None if order_id is None else self.orders[order_id]

    async def put(self, order: orders_pb2.Order, request_id: str = "") -> None:
        stored = orders_pb2.Order()
        stored.CopyFrom(order)
        self.orders[order.order_id] = stored
        if request_id:
            self.requests[(order.customer_id, request_id)] = order.order_id
        async with self.changed:
            self.changed.notify_all()

    def of_customer(self, customer_id: str) -> list[orders_pb2.Order]:
        found = [o for o in self.orders.values() if o.customer_id == customer_id]
        return sorted(found, key=lambda o: o.order_id)
