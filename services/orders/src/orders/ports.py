"""What the order flow (orders.domain) needs from the world, as protocols: the other
services (Catalog, Payments: orders.peers over gRPC) and where orders are kept (Store,
Transaction: orders.store on a database, orders.memory in memory)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from keel.data import Database

from orders.model import Line, Order, Payment

Metadata = Sequence[tuple[str, str]]
"""Call metadata for a port's call: (key, value) pairs."""


class Catalog(Protocol):
    """The catalog, as orders needs it (DependencyError when a call fails). `metadata`: what
    the call carries besides the request (a saga step's idempotency key, the correlation id):
    the effect happens once per idempotency key."""

    async def reserve(
        self, order_id: str, lines: Sequence[Line], *, metadata: Metadata = ()
    ) -> tuple[int, str]:
        """Reserve the lines' stock for the order (idempotent); its total and currency."""
        ...

    async def release(self, order_id: str, *, metadata: Metadata = ()) -> None:
        """Give the order's stock back (idempotent; nothing reserved: nothing to do)."""
        ...


class Payments(Protocol):
    """Payments, as orders needs it (DependencyError when a call fails). `metadata` as for
    Catalog."""

    async def authorize(
        self,
        order_id: str,
        amount_cents: int,
        currency: str,
        token: str,
        *,
        metadata: Metadata = (),
    ) -> Payment:
        """The order's payment (one per order id)."""
        ...

    async def capture(self, payment_id: str, *, metadata: Metadata = ()) -> Payment: ...
    async def void(self, order_id: str, *, metadata: Metadata = ()) -> Payment:
        """Release the order's authorization (a payment that holds nothing stays as it is; an
        order without one gets a VOIDED one, so a late authorization authorizes nothing).
        CapturedError when the payment was captured: it is refunded instead."""
        ...

    async def refund(self, order_id: str, *, metadata: Metadata = ()) -> Payment | None:
        """Give the order's captured payment back (REFUNDED); None when nothing was captured
        (no payment, or one never captured)."""
        ...


class Transaction(Protocol):
    """Orders' data within one transaction (see Store.transaction)."""

    async def get(self, order_id: str) -> Order | None: ...
    async def lock(self, order_id: str) -> Order | None:
        """The order, locked until the transaction ends."""
        ...

    async def by_request(self, customer_id: str, request_id: str) -> Order | None:
        """The order a CreateOrder with this request id made."""
        ...

    async def add(self, order: Order, request_id: str = "") -> None:
        """Store a new order (and the request id that made it)."""
        ...

    async def put(self, order: Order) -> None:
        """Store a changed order (one that exists)."""
        ...

    async def page(self, customer_id: str, after: str, limit: int) -> list[Order]:
        """Up to `limit` of the customer's orders with ids after `after`, in id order (the
        order they were created in)."""
        ...

    async def placed(self, order: Order) -> None:
        """Publish OrderPlaced for `order`, committed with this transaction."""
        ...

    async def cancelled(self, order: Order, reason: str) -> None:
        """Publish OrderCancelled for `order`, committed with this transaction."""
        ...


class Store(Protocol):
    """Where orders are kept."""

    db: Database
    """The database, where the sagas placing and cancelling orders are recorded too."""

    def transaction(self, *, readonly: bool = False) -> AbstractAsyncContextManager[Transaction]:
        """One transaction: committed when the block ends, undone when it raises;
        ConflictError when a concurrent transaction made it impossible."""
        ...
