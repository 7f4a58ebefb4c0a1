"""Orders' data in this process's memory: a second orders.domain.Store, for the domain's unit
tests. Transactions take turns (one lock) and work on copies that replace the data when the
block ends without an error. Events are kept in `events`, in the order they were committed.

keel.saga records the placing and cancelling sagas in a database of its own kind: `db` is a
throwaway SQLite file holding only its tables (keel_saga, keel_saga_step)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from keel.data import Database
from keel.saga import tables as sagas
from sqlalchemy import MetaData

from orders.domain import ConflictError, Order


@dataclass
class Data:
    """Everything the store holds: orders by id, the order each (customer, request id) made,
    and the events published, as (name, order, reason)."""

    orders: dict[str, Order] = field(default_factory=dict)
    requests: dict[tuple[str, str], str] = field(default_factory=dict)
    events: list[tuple[str, Order, str]] = field(default_factory=list)

    def copy(self) -> Data:
        return Data(dict(self.orders), dict(self.requests), list(self.events))


class InMemoryTransaction:
    """orders.domain.Transaction on a copy of the store's data."""

    def __init__(self, data: Data) -> None:
        self.data = data

    async def get(self, order_id: str) -> Order | None:
        return self.data.orders.get(order_id)

    async def lock(self, order_id: str) -> Order | None:
        return self.data.orders.get(order_id)  # transactions take turns: all is locked

    async def by_request(self, customer_id: str, request_id: str) -> Order | None:
        order_id = self.data.requests.get((customer_id, request_id))
        return None if order_id is None else self.data.orders.get(order_id)

    async def add(self, order: Order, request_id: str = "") -> None:
        made = (order.customer_id, request_id)
        if order.order_id in self.data.orders or (request_id and made in self.data.requests):
            raise ConflictError(f"order {order.order_id} or request {request_id} exists")
        self.data.orders[order.order_id] = order
        if request_id:
            self.data.requests[made] = order.order_id

    async def put(self, order: Order) -> None:
        if order.order_id not in self.data.orders:
            raise ConflictError(f"order {order.order_id} no longer exists")
        self.data.orders[order.order_id] = order

    async def page(self, customer_id: str, after: str, limit: int) -> list[Order]:
        ids = sorted(
            i for i, o in self.data.orders.items() if o.customer_id == customer_id and i > after
        )
        return [self.data.orders[i] for i in ids[:limit]]

    async def placed(self, order: Order) -> None:
        self.data.events.append(("OrderPlaced", order, ""))

    async def cancelled(self, order: Order, reason: str) -> None:
        self.data.events.append(("OrderCancelled", order, reason))


class InMemoryStore:
    """orders.domain.Store in memory: `data` as committed; `db` for keel.saga only."""

    def __init__(self) -> None:
        self.data = Data()
        self._turn = asyncio.Lock()
        saga_tables = MetaData()
        sagas.add_to(saga_tables)
        self.db = Database.temporary(saga_tables)

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[InMemoryTransaction]:
        """One transaction (orders.domain.Store): committed when the block ends."""
        async with self._turn:
            tx = InMemoryTransaction(self.data.copy())
            yield tx
            if not readonly:
                self.data = tx.data

    async def close(self) -> None:
        """Remove the sagas' throwaway database."""
        await self.db.dispose()
