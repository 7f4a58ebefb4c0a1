"""The order flow, independent of gRPC and of how the data is stored: create → reserve stock
(the catalog) → authorize and capture payment (payments) → CONFIRMED, and cancel, as sagas
(orders.placing) recorded in the store's database; ship, watch, list. Orders are kept in a
Store; the other services are reached through the Catalog and Payments ports (the protocols:
orders.ports). The values are in orders.model, the shop's limits in orders.settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import keel
from keel.data import new_id
from keel.runtime import config

from orders.model import (
    FINAL,
    CapturedError,
    ConflictError,
    DependencyError,
    InvalidOrderError,
    Line,
    NotConfirmedError,
    NotFoundError,
    Order,
    Payment,
    ShippedError,
    State,
)
from orders.ports import Catalog, Metadata, Payments, Store, Transaction
from orders.settings import OrdersSettings

__all__ = [
    "FINAL",
    "CapturedError",
    "Catalog",
    "ConflictError",
    "DependencyError",
    "InvalidOrderError",
    "Line",
    "Metadata",
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
    """The order flow, within the shop's `orders_settings` (limits, currency, page sizes;
    default: from the ORDERS_* environment). `watch_interval` (default: the settings'):
    seconds between a watcher's reads of its order (a change this process makes wakes it at
    once; another worker's is seen at the next read). `settings`: Keel's (the sagas' backoff
    and lease)."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        payments: Payments,
        *,
        watch_interval: float | None = None,
        settings: config.Settings | None = None,
        orders_settings: OrdersSettings | None = None,
    ) -> None:
        from orders.placing import Placing  # noqa: PLC0415 (it builds on this class)

        self.store = store
        self.settings = orders_settings or OrdersSettings()
        self.watch_interval = watch_interval or self.settings.watch_interval
        self.changes = Changes()
        self.placing = Placing(
            self, catalog, payments, store.db, settings=settings, currency=self.settings.currency
        )

    def check(self, lines: Sequence[Line]) -> None:
        """InvalidOrderError when `lines` break the shop's limits (count, quantity per line)."""
        if len(lines) > self.settings.max_lines:
            raise InvalidOrderError(
                "lines", f"an order has at most {self.settings.max_lines} lines"
            )
        for i, line in enumerate(lines):
            if line.quantity > self.settings.max_quantity:
                raise InvalidOrderError(
                    f"lines[{i}].quantity",
                    f"a line has at most {self.settings.max_quantity} units",
                )

    def page_size(self, requested: int) -> int:
        """The page size for a request's `page_size` (0: the default; lowered to the most)."""
        return min(requested or self.settings.default_page_size, self.settings.max_page_size)

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

    async def _by_request(self, customer_id: str, request_id: str) -> Order | None:
        async with self.store.transaction(readonly=True) as tx:
            return await tx.by_request(customer_id, request_id)

    async def create(
        self, customer_id: str, lines: Sequence[Line], token: str, request_id: str = ""
    ) -> Order:
        """Place an order (the placing saga): CONFIRMED (OrderPlaced published with it) or
        REJECTED (a declined card; stock given back). DependencyError when a service failed
        or refused: the order is REJECTED once what was done is undone (PENDING until then).
        A retried call with the same request id returns the first call's order.
        InvalidOrderError (before anything is done) when the lines break the shop's limits."""
        self.check(lines)
        if request_id and (earlier := await self._by_request(customer_id, request_id)):
            return earlier
        order_id = new_id("o")
        data = {
            "order_id": order_id,
            "customer_id": customer_id,
            "lines": [[x.product_id, x.quantity] for x in lines],
            "token": token,
            "request_id": request_id,
        }
        try:
            state = await self.placing.run(self.placing.place, data, order_id)
        finally:
            failure = self.placing.failures.pop(order_id, None)
        async with self.store.transaction(readonly=True) as tx:
            order = await tx.get(order_id)
        if order is None:  # a concurrent call with the same request id opened its order first
            earlier = await self._by_request(customer_id, request_id) if request_id else None
            if earlier is None:
                raise ConflictError(f"order {order_id} could not be opened: {state.error}")
            return earlier
        if order.state != State.CONFIRMED and failure is not None:
            raise failure
        return order

    async def cancel(self, order_id: str, reason: str = "cancelled by the customer") -> Order:
        """Cancel an order that has not shipped (the cancelling saga): CANCELLED (with
        OrderCancelled if it had been placed), its payment refunded or voided and its stock
        given back (retried in the background while a service is down). Cancelling again
        changes nothing."""
        order = await self.get(order_id)
        if order.state in (State.CANCELLED, State.REJECTED):
            return order
        if order.state == State.SHIPPED:
            raise ShippedError(order_id)
        from orders.placing import cancel_saga_id  # noqa: PLC0415

        data = {"order_id": order_id, "customer_id": order.customer_id, "reason": reason}
        await self.placing.run(self.placing.cancel, data, cancel_saga_id(order_id))
        self.placing.failures.pop(cancel_saga_id(order_id), None)
        order = await self.get(order_id)
        if order.state == State.SHIPPED:
            raise ShippedError(order_id)
        return order

    # -- the sagas' local steps -------------------------------------------------------------

    async def open(self, order: Order, request_id: str = "") -> None:
        """Store the new PENDING order (again: nothing). ALREADY_EXISTS when another order
        has the request id."""
        try:
            async with self.store.transaction() as tx:
                if await tx.get(order.order_id) is None:
                    await tx.add(order, request_id)
        except ConflictError:
            raise keel.errors.AlreadyExists(
                f"request {request_id} has made another order", reason="REQUEST_ID_USED"
            ) from None
        self.changes.notify()

    async def _update(self, order_id: str, change: dict[str, object]) -> None:
        async with self.store.transaction() as tx:
            stored = await tx.lock(order_id)
            if stored is None:
                return
            await tx.put(
                replace(stored, **change, updated=datetime.now(UTC), version=stored.version + 1)  # type: ignore[arg-type]
            )
        self.changes.notify()

    async def priced(self, order_id: str, total_cents: int, currency: str) -> None:
        """Record the order's total (as the catalog reserved it)."""
        await self._update(order_id, {"total_cents": total_cents, "currency": currency})

    async def paid(self, order_id: str, payment: Payment) -> None:
        """Record the order's payment as payments last reported it."""
        await self._update(order_id, {"payment": payment})

    async def confirm(self, order_id: str) -> bool:
        """PENDING → CONFIRMED with OrderPlaced; False if it is no longer PENDING."""
        async with self.store.transaction() as tx:
            stored = await tx.lock(order_id)
            if stored is None or stored.state not in (State.PENDING, State.CONFIRMED):
                return False
            if stored.state == State.PENDING:
                order = self._changed(stored, stored, State.CONFIRMED)
                await tx.put(order)
                await tx.placed(order)
        self.changes.notify()
        return True

    async def note_reason(self, order_id: str, reason: str) -> None:
        """Record why a PENDING order is being undone (the first reason stays)."""
        async with self.store.transaction() as tx:
            stored = await tx.lock(order_id)
            if stored is not None and stored.state == State.PENDING and not stored.reason:
                await tx.put(replace(stored, reason=reason))

    async def reject(self, order_id: str, reason: str) -> None:
        """PENDING → REJECTED with the reason noted, else `reason` (another state stays)."""
        async with self.store.transaction() as tx:
            stored = await tx.lock(order_id)
            if stored is None or stored.state != State.PENDING:
                return
            order = replace(stored, reason=stored.reason or reason)
            await tx.put(self._changed(stored, order, State.REJECTED))
        self.changes.notify()

    async def mark_cancelled(self, order_id: str, reason: str) -> None:
        """→ CANCELLED with `reason`, publishing OrderCancelled if it was CONFIRMED; already
        CANCELLED or REJECTED: nothing. FAILED_PRECONDITION once SHIPPED."""
        async with self.store.transaction() as tx:
            stored = await tx.lock(order_id)
            if stored is None:
                raise keel.errors.NotFound(f"order {order_id} does not exist")
            if stored.state == State.SHIPPED:
                raise keel.errors.FailedPrecondition(
                    f"order {order_id} has shipped", reason="ORDER_SHIPPED"
                )
            if stored.state in (State.CANCELLED, State.REJECTED):
                return
            order = replace(stored, reason=reason)
            cancelled = self._changed(stored, order, State.CANCELLED)
            await tx.put(cancelled)
            if stored.state == State.CONFIRMED:
                await tx.cancelled(cancelled, reason)
        self.changes.notify()

    @staticmethod
    def _changed(stored: Order, order: Order, state: State) -> Order:
        return replace(order, state=state, updated=datetime.now(UTC), version=stored.version + 1)

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
