"""The order flow, independent of gRPC and of how the data is stored: create → reserve stock
(the catalog) → authorize and capture payment (payments) → CONFIRMED; cancel, ship, watch,
list. Orders are kept in a Store (see orders.store); the other services are reached through
the Catalog and Payments ports (see orders.peers). The values are in orders.model."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

from keel.data import new_id

from orders.model import (
    FINAL,
    ConflictError,
    DependencyError,
    Line,
    NotConfirmedError,
    NotFoundError,
    Order,
    Payment,
    ShippedError,
    State,
)

__all__ = [
    "FINAL",
    "Catalog",
    "ConflictError",
    "DependencyError",
    "Line",
    "NotConfirmedError",
    "NotFoundError",
    "Order",
    "Orders",
    "Payment",
    "Payments",
    "ShippedError",
    "State",
    "Store",
    "Transaction",
]


class Catalog(Protocol):
    """The catalog, as orders needs it (DependencyError when a call fails)."""

    async def reserve(self, order_id: str, lines: Sequence[Line]) -> tuple[int, str]:
        """Reserve the lines' stock for the order (idempotent); its total and currency."""
        ...

    async def release(self, order_id: str) -> None:
        """Give the order's stock back (idempotent)."""
        ...


class Payments(Protocol):
    """Payments, as orders needs it (DependencyError when a call fails)."""

    async def authorize(
        self, order_id: str, amount_cents: int, currency: str, token: str
    ) -> Payment:
        """The order's payment (one per order id)."""
        ...

    async def capture(self, payment_id: str) -> Payment: ...
    async def void(self, payment_id: str) -> Payment: ...


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

    def transaction(self, *, readonly: bool = False) -> AbstractAsyncContextManager[Transaction]:
        """One transaction: committed when the block ends, undone when it raises;
        ConflictError when a concurrent transaction made it impossible."""
        ...


class Changes:
    """Wakes this process's watchers when it changes an order (others' changes are polled)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def signal(self) -> asyncio.Event:
        """Set at this process's next change (take it before reading what may change)."""
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None


class Orders:
    """The order flow. `watch_interval`: seconds between a watcher's reads of its order (a
    change this process makes wakes it at once; another worker's is seen at the next read)."""

    def __init__(
        self, store: Store, catalog: Catalog, payments: Payments, *, watch_interval: float = 0.5
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.payments = payments
        self.watch_interval = watch_interval
        self.changes = Changes()

    async def get(self, order_id: str, customer_id: str = "") -> Order:
        async with self.store.transaction(readonly=True) as tx:
            order = await tx.get(order_id)
        if order is None or (customer_id and order.customer_id != customer_id):
            raise NotFoundError(order_id)
        return order

    async def page(
        self, customer_id: str, after: str, limit: int
    ) -> tuple[list[Order], str | None]:
        """Up to `limit` of the customer's orders after id `after`, oldest first, and the last
        one's id if more follow."""
        async with self.store.transaction(readonly=True) as tx:
            orders = await tx.page(customer_id, after, limit + 1)
        if len(orders) > limit:
            return orders[:limit], orders[limit - 1].order_id
        return orders, None

    async def create(
        self, customer_id: str, lines: Sequence[Line], token: str, request_id: str = ""
    ) -> Order:
        """Place an order: CONFIRMED (OrderPlaced published with it) or REJECTED (declined
        card; stock given back). DependencyError when a service failed (the order is
        REJECTED, its stock given back). A retried call with the same request id returns the
        first call's order."""
        order = Order(new_id("o"), customer_id, tuple(lines))
        try:
            async with self.store.transaction() as tx:
                earlier = await tx.by_request(customer_id, request_id) if request_id else None
                if earlier is not None:
                    return earlier
                await tx.add(order, request_id)
        except ConflictError:  # a concurrent call with the same request id won
            async with self.store.transaction(readonly=True) as tx:
                earlier = await tx.by_request(customer_id, request_id)
            if earlier is None:
                raise
            return earlier
        try:
            total, currency = await self.catalog.reserve(order.order_id, order.lines)
        except DependencyError as error:
            await self._reject(order)
            if error.uncertain:  # the reservation may have happened
                await self._release(order.order_id)
            raise
        order = replace(order, total_cents=total, currency=currency)
        try:
            payment = await self.payments.authorize(order.order_id, total, currency, token)
            if payment.state == "AUTHORIZED":
                payment = await self.payments.capture(payment.payment_id)
        except DependencyError:
            await self._release(order.order_id)
            await self._reject(order)
            raise
        order = replace(order, payment=payment)
        if payment.state != "CAPTURED":
            await self._release(order.order_id)
            return await self._reject(order)
        return await self._confirm(order)

    async def _release(self, order_id: str) -> None:
        # ReleaseStock is idempotent: if this fails, a later cancel gives the stock back.
        with contextlib.suppress(DependencyError):
            await self.catalog.release(order_id)

    async def _reject(self, order: Order) -> Order:
        async with self.store.transaction() as tx:
            stored = await tx.lock(order.order_id)
            if stored is None or stored.state != State.PENDING:
                return stored or order
            order = self._changed(stored, order, State.REJECTED)
            await tx.put(order)
        self.changes.notify()
        return order

    async def _confirm(self, order: Order) -> Order:
        async with self.store.transaction() as tx:
            stored = await tx.lock(order.order_id)
            pending = stored is not None and stored.state == State.PENDING
            if stored is not None and pending:
                order = self._changed(stored, order, State.CONFIRMED)
                await tx.put(order)
                await tx.placed(order)
        if not pending:  # cancelled while it was being placed: undo what this call did
            assert order.payment is not None
            with contextlib.suppress(DependencyError):
                await self.payments.void(order.payment.payment_id)
            await self._release(order.order_id)
            return stored or order
        self.changes.notify()
        return order

    @staticmethod
    def _changed(stored: Order, order: Order, state: State) -> Order:
        return replace(order, state=state, updated=datetime.now(UTC), version=stored.version + 1)

    async def cancel(self, order_id: str, reason: str = "cancelled by the customer") -> Order:
        """Cancel an order that has not shipped: void its payment, give its stock back, and
        publish OrderCancelled if it had been placed. Cancelling again changes nothing."""
        order = await self.get(order_id)
        if order.state in (State.CANCELLED, State.REJECTED):
            return order
        if order.state == State.SHIPPED:
            raise ShippedError(order_id)
        payment = order.payment
        if payment is not None:
            payment = await self.payments.void(payment.payment_id)
        await self.catalog.release(order_id)
        async with self.store.transaction() as tx:
            stored = await tx.lock(order_id)
            if stored is None:
                raise NotFoundError(order_id)
            if stored.state == State.SHIPPED:
                raise ShippedError(order_id)
            if stored.state in (State.CANCELLED, State.REJECTED):
                return stored
            cancelled = self._changed(stored, replace(stored, payment=payment), State.CANCELLED)
            await tx.put(cancelled)
            if stored.state == State.CONFIRMED:
                await tx.cancelled(cancelled, reason)
        self.changes.notify()
        return cancelled

    async def ship(self, order_id: str) -> Order:
        """Mark a CONFIRMED order SHIPPED (again: no change)."""
        async with self.store.transaction() as tx:
            order = await tx.lock(order_id)
            if order is None:
                raise NotFoundError(order_id)
            if order.state == State.SHIPPED:
                return order
            if order.state != State.CONFIRMED:
                raise NotConfirmedError(order)
            order = self._changed(order, order, State.SHIPPED)
            await tx.put(order)
        self.changes.notify()
        return order

    async def watch(self, order_id: str) -> AsyncIterator[Order]:
        """The order, then the order each time it has changed, until it is final. Changes
        committed by any process are seen: this process's at once, others' within
        `watch_interval` (the order is read again that often)."""
        order = await self.get(order_id)
        yield order
        while order.state not in FINAL:
            signal = self.changes.signal()
            current = await self.get(order_id)
            if current.version != order.version:
                order = current
                yield order
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), self.watch_interval)
