"""The order flow on orders' store, on SQLite and on PostgreSQL, with the real catalog and
payments rules (on throwaway databases of their own): ids, keyset pages in creation order
stable under inserts, idempotent creation, events committed with the state change, and
watchers that see changes another process commits."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence

import keel.errors
import keel.saga
import pytest
from acme.orders.v1 import orders_pb2
from catalog import domain as catalog_domain
from catalog import store as catalog_store
from keel.data import Database
from keel.events import tables
from keel.runtime import config
from keel.testing.nats import eventually
from orders.domain import (
    CapturedError,
    DependencyError,
    Line,
    Metadata,
    NotConfirmedError,
    Order,
    Orders,
    Payment,
    ShippedError,
    State,
)
from orders.store import SqlStore
from payments import domain as payments_domain
from payments import store as payments_store
from sqlalchemy import select


class LocalCatalog:
    """orders.domain.Catalog on the catalog's own rules and store, in this process."""

    def __init__(self) -> None:
        self.store = catalog_store.seed(catalog_store.MemoryStore())
        self.catalog = catalog_domain.Catalog(self.store)

    async def reserve(
        self, order_id: str, lines: Sequence[Line], *, metadata: Metadata = ()
    ) -> tuple[int, str]:
        try:
            made = await self.catalog.reserve(order_id, [(x.product_id, x.quantity) for x in lines])
        except catalog_domain.OutOfStockError as error:
            raise DependencyError("the catalog", error) from None
        return made.total_cents, made.currency

    async def release(self, order_id: str, *, metadata: Metadata = ()) -> None:
        await self.catalog.release(order_id)

    async def stock(self, product_id: str) -> int:
        return (await self.catalog.get(product_id)).stock


def _payment(payment: payments_domain.Payment) -> Payment:
    return Payment(
        payment.payment_id,
        payment.state.value,
        payment.amount_cents,
        payment.currency,
        payment.decline_reason,
        payment.updated,
    )


class LocalPayments:
    """orders.domain.Payments on payments' own rules and store, in this process."""

    def __init__(self) -> None:
        self.store = payments_store.MemoryStore()
        self.payments = payments_domain.Payments(self.store)
        self.down = False
        """While set, voids and refunds fail as a payments service that does not answer would."""

    async def authorize(
        self,
        order_id: str,
        amount_cents: int,
        currency: str,
        token: str,
        *,
        metadata: Metadata = (),
    ) -> Payment:
        return _payment(await self.payments.authorize(order_id, amount_cents, currency, token))

    async def capture(self, payment_id: str, *, metadata: Metadata = ()) -> Payment:
        return _payment(await self.payments.capture(payment_id))

    def _answering(self) -> None:
        if self.down:
            raise DependencyError("payments", keel.errors.Unavailable("down"), uncertain=True)

    async def void(self, order_id: str, *, metadata: Metadata = ()) -> Payment:
        self._answering()
        try:
            return _payment(await self.payments.void_order(order_id))
        except payments_domain.CapturedError:
            raise CapturedError(order_id) from None

    async def refund(self, order_id: str, *, metadata: Metadata = ()) -> Payment | None:
        self._answering()
        try:
            return _payment(await self.payments.refund_order(order_id))
        except (payments_domain.NotFoundError, payments_domain.NotCapturedError):
            return None


@pytest.fixture
async def peers() -> AsyncIterator[tuple[LocalCatalog, LocalPayments]]:
    catalog, payments = LocalCatalog(), LocalPayments()
    yield catalog, payments
    await catalog.store.close()
    await payments.store.close()


@pytest.fixture
def orders(keel_database: Database, peers: tuple[LocalCatalog, LocalPayments]) -> Orders:
    """The order flow on orders' migrated database (SQLite, then PostgreSQL)."""
    return Orders(SqlStore(keel_database), *peers, watch_interval=0.05)


MUG = (Line("p_mug", 1),)


async def _events(db: Database) -> list[tuple[str, bytes]]:
    async with db.transaction() as session:
        rows = await session.execute(
            select(tables.outbox.c.subject, tables.outbox.c.payload).order_by(tables.outbox.c.id)
        )
        return [(row.subject, row.payload) for row in rows]


async def test_a_confirmed_order_is_stored_and_placed_in_one_transaction(
    orders: Orders, keel_database: Database, peers: tuple[LocalCatalog, LocalPayments]
) -> None:
    order = await orders.create("c_1", [Line("p_kettle", 2)], "tok_visa")
    assert order.order_id.startswith("o_")
    assert (order.state, order.total_cents, order.currency) == (State.CONFIRMED, 5998, "EUR")
    assert order.payment is not None
    assert order.payment.state == "CAPTURED"
    assert await orders.get(order.order_id) == order
    assert await peers[0].stock("p_kettle") == 23
    rejected = await orders.create("c_1", [Line("p_kettle", 1)], "tok_decline")
    assert rejected.state == State.REJECTED
    assert rejected.reason == "authorize: DeclinedError: card declined"
    assert await peers[0].stock("p_kettle") == 23  # given back
    saga = await keel.saga.show(keel_database, rejected.order_id)  # the saga's record
    assert saga is not None
    assert saga.status == keel.saga.COMPENSATED
    assert [(s.name, s.status) for s in saga.steps] == [
        ("open", keel.saga.UNDONE),
        ("reserve", keel.saga.UNDONE),
        ("authorize", keel.saga.UNDONE),
    ]
    events = await _events(keel_database)
    assert [subject for subject, _ in events] == ["acme.orders.v1.order.placed"]  # not rejected
    placed = orders_pb2.OrderPlaced.FromString(events[0][1])
    assert (placed.order_id, placed.customer_id, placed.total_cents) == (
        order.order_id,
        "c_1",
        5998,
    )
    assert [(x.product_id, x.quantity) for x in placed.lines] == [("p_kettle", 2)]


async def test_ids_are_new_after_a_restart(
    keel_database: Database, peers: tuple[LocalCatalog, LocalPayments]
) -> None:
    before = [
        (await Orders(SqlStore(keel_database), *peers).create("c_1", MUG, "tok_visa")).order_id
        for _ in range(3)
    ]
    await keel_database.dispose()
    reopened = Database(keel_database.url)  # a new process: the same data, nothing in memory
    try:
        restarted = Orders(SqlStore(reopened), *peers)
        after = await restarted.create("c_1", MUG, "tok_visa")
        assert after.order_id not in before
        assert after.order_id > max(before)
        assert after.payment is not None
        assert after.state == State.CONFIRMED
        assert after.payment.payment_id not in {
            (await restarted.get(o)).payment.payment_id  # type: ignore[union-attr]
            for o in before
        }
    finally:
        await reopened.dispose()


async def test_pages_follow_creation_and_neither_repeat_nor_skip_under_inserts(
    orders: Orders,
) -> None:
    made = [(await orders.create("c_1", MUG, "tok_visa")).order_id for _ in range(12)]
    await orders.create("c_2", MUG, "tok_visa")  # another customer's
    seen: list[str] = []
    page, last = await orders.page("c_1", "", 5)
    seen += [o.order_id for o in page]
    late = (await orders.create("c_1", MUG, "tok_visa")).order_id
    while last is not None:
        page, last = await orders.page("c_1", last, 5)
        seen += [o.order_id for o in page]
    assert seen == [*made, late]  # the 10th after the 2nd: creation order, each once


async def test_a_retried_create_returns_the_first_order(
    orders: Orders, peers: tuple[LocalCatalog, LocalPayments]
) -> None:
    made = await asyncio.gather(
        *(orders.create("c_1", [Line("p_teapot", 1)], "tok_visa", "r-1") for _ in range(4)),
        return_exceptions=True,
    )
    ids = {m.order_id for m in made if isinstance(m, Order)}
    assert len(ids) == 1, made
    again = await orders.create("c_1", [Line("p_teapot", 1)], "tok_visa", "r-1")
    assert again.order_id in ids
    assert again.state == State.CONFIRMED
    assert await peers[0].stock("p_teapot") == 9  # reserved once
    other = await orders.create("c_2", [Line("p_teapot", 1)], "tok_visa", "r-1")
    assert other.order_id not in ids  # request ids are per customer


async def test_cancel_publishes_once_and_shipped_orders_stay(
    orders: Orders, keel_database: Database, peers: tuple[LocalCatalog, LocalPayments]
) -> None:
    order = await orders.create("c_1", [Line("p_teapot", 3)], "tok_visa")
    cancelled = await orders.cancel(order.order_id)
    assert cancelled.state == State.CANCELLED
    assert cancelled.payment is not None
    assert cancelled.payment.state == "REFUNDED"
    assert cancelled.reason == "cancelled by the customer"
    assert await orders.cancel(order.order_id) == cancelled
    assert await peers[0].stock("p_teapot") == 10
    subjects = [subject for subject, _ in await _events(keel_database)]
    assert subjects == ["acme.orders.v1.order.placed", "acme.orders.v1.order.cancelled"]
    with pytest.raises(NotConfirmedError):
        await orders.ship(order.order_id)
    shipped = await orders.ship((await orders.create("c_1", MUG, "tok_visa")).order_id)
    assert shipped.state == State.SHIPPED
    with pytest.raises(ShippedError):
        await orders.cancel(shipped.order_id)


async def test_a_cancel_goes_through_and_finishes_its_refund_once_payments_is_back(
    keel_database: Database, peers: tuple[LocalCatalog, LocalPayments]
) -> None:
    quick = dataclasses.replace(config.current(), saga_backoff=(0.01,), saga_lease=0.1)
    orders = Orders(SqlStore(keel_database), *peers, settings=quick)
    catalog, payments = peers
    order = await orders.create("c_1", [Line("p_teapot", 3)], "tok_visa")
    assert order.payment is not None
    payments.down = True
    cancelled = await orders.cancel(order.order_id)  # CANCELLED now; the refund waits
    assert cancelled.state == State.CANCELLED
    assert await catalog.stock("p_teapot") == 7
    assert (await payments.payments.get(order.payment.payment_id)).state.value == "CAPTURED"
    payments.down = False

    async def ended() -> bool:
        saga = await keel.saga.show(keel_database, f"{order.order_id}/cancel")
        return saga is not None and saga.finished

    await eventually(ended, timeout=10, what="the cancelling saga's end")
    saga = await keel.saga.show(keel_database, f"{order.order_id}/cancel")
    assert saga is not None
    assert saga.status == keel.saga.COMPLETED  # past its pivot (cancel): only forward
    assert (await payments.payments.get(order.payment.payment_id)).state.value == "REFUNDED"
    assert await catalog.stock("p_teapot") == 10
    assert (await orders.get(order.order_id)).state == State.CANCELLED
    await orders.placing.close()


async def test_a_watcher_sees_a_change_another_process_commits(
    orders: Orders, keel_database: Database, peers: tuple[LocalCatalog, LocalPayments]
) -> None:
    order = await orders.create("c_1", MUG, "tok_visa")
    other_process = Database(keel_database.url)  # its own connections, its own Orders
    try:
        seen: list[State] = []
        watching = orders.watch(order.order_id)
        seen.append((await anext(watching)).state)
        await Orders(SqlStore(other_process), *peers).ship(order.order_id)
        seen += [o.state async for o in watching]  # ends: SHIPPED is final
        assert seen == [State.CONFIRMED, State.SHIPPED]
    finally:
        await other_process.dispose()
