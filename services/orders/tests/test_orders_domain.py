"""The order flow's rules on the in-memory store (no gRPC, no database of orders): placing
and cancelling as sagas with their compensations (refund a capture, void an authorization,
release stock), the reason an order keeps, and the shop's settings. The catalog is a fake in
memory; payments is payments' own domain on its in-memory store."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence

import keel.errors
import keel.saga
import pytest
from keel.runtime import config
from keel.testing.nats import eventually
from orders.domain import (
    CapturedError,
    DependencyError,
    InvalidOrderError,
    Line,
    Metadata,
    Orders,
    Payment,
    State,
)
from orders.memory import InMemoryStore
from orders.settings import OrdersSettings
from payments import domain as payments_domain
from payments.memory import InMemoryStore as PaymentsStore

QUICK = dataclasses.replace(config.current(), saga_backoff=(0.01,), saga_lease=0.1)
"""Sagas retry a failing peer at once, and try an unfinished one again every 0.1 s."""


class Catalog:
    """orders.domain.Catalog in memory: every unit costs `price` cents in `currency`."""

    def __init__(self, price: int = 250, currency: str = "EUR") -> None:
        self.stock = {"p_mug": 10, "p_pot": 2}
        self.held: dict[str, list[Line]] = {}
        self.price, self.currency = price, currency

    async def reserve(
        self, order_id: str, lines: Sequence[Line], *, metadata: Metadata = ()
    ) -> tuple[int, str]:
        if order_id not in self.held:
            if any(self.stock[x.product_id] < x.quantity for x in lines):
                refused = keel.errors.FailedPrecondition("out of stock", reason="OUT_OF_STOCK")
                raise DependencyError("the catalog", refused)
            for x in lines:
                self.stock[x.product_id] -= x.quantity
            self.held[order_id] = list(lines)
        return sum(x.quantity for x in self.held[order_id]) * self.price, self.currency

    async def release(self, order_id: str, *, metadata: Metadata = ()) -> None:
        for x in self.held.pop(order_id, []):
            self.stock[x.product_id] += x.quantity


def _payment(payment: payments_domain.Payment) -> Payment:
    return Payment(
        payment.payment_id,
        payment.state.value,
        payment.amount_cents,
        payment.currency,
        payment.decline_reason,
        payment.updated,
    )


class Payments:
    """orders.domain.Payments on payments' own rules and in-memory store. `down`: voids and
    refunds fail as a payments service that does not answer would; `refuse_capture`: capture
    is FAILED_PRECONDITION; `late_capture`: capture fails without an answer, and its effect
    lands after the next refund looked (a capture delayed in the network)."""

    def __init__(self) -> None:
        self.payments = payments_domain.Payments(PaymentsStore())
        self.down = self.refuse_capture = self.late_capture = False
        self._landing: str | None = None

    def _answering(self) -> None:
        if self.down:
            raise DependencyError("payments", keel.errors.Unavailable("down"), uncertain=True)

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
        if self.refuse_capture:
            refused = keel.errors.FailedPrecondition("the card expired")
            raise DependencyError("payments", refused)
        if self.late_capture:
            self._landing = payment_id
            raise DependencyError("payments", keel.errors.DeadlineExceeded("slow"), uncertain=True)
        return _payment(await self.payments.capture(payment_id))

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
        finally:
            if self._landing is not None:  # the delayed capture arrives now
                await self.payments.capture(self._landing)
                self._landing = None

    async def state(self, order_id: str) -> str:
        async with self.payments.store.transaction(readonly=True) as tx:
            payment = await tx.of_order(order_id)
        return "" if payment is None else payment.state.value


@pytest.fixture
async def store() -> AsyncIterator[InMemoryStore]:
    made = InMemoryStore()
    yield made
    await made.close()


@pytest.fixture
async def orders(store: InMemoryStore) -> AsyncIterator[Orders]:
    made = Orders(store, Catalog(), Payments(), settings=QUICK, orders_settings=OrdersSettings())
    yield made
    await made.placing.close()


def _peers(orders: Orders) -> tuple[Catalog, Payments]:
    catalog, payments = orders.placing.catalog, orders.placing.payments
    assert isinstance(catalog, Catalog)
    assert isinstance(payments, Payments)
    return catalog, payments


async def _steps(orders: Orders, saga_id: str) -> list[tuple[str, str]]:
    saga = await keel.saga.show(orders.store.db, saga_id)
    assert saga is not None
    return [(s.name, s.status) for s in saga.steps]


async def test_a_placed_order_is_confirmed_paid_and_published(
    orders: Orders, store: InMemoryStore
) -> None:
    catalog, payments = _peers(orders)
    order = await orders.create("c_1", [Line("p_mug", 3)], "tok_visa")
    assert (order.state, order.total_cents, order.currency) == (State.CONFIRMED, 750, "EUR")
    assert order.payment is not None
    assert order.payment.state == "CAPTURED"
    assert (catalog.stock["p_mug"], await payments.state(order.order_id)) == (7, "CAPTURED")
    assert [(name, o.order_id) for name, o, _ in store.data.events] == [
        ("OrderPlaced", order.order_id)
    ]
    assert [s for _, s in await _steps(orders, order.order_id)] == [keel.saga.DONE] * 5


async def test_a_declined_card_rejects_the_order_and_gives_the_stock_back(
    orders: Orders, store: InMemoryStore
) -> None:
    catalog, payments = _peers(orders)
    order = await orders.create("c_1", [Line("p_mug", 3)], "tok_decline")
    assert (order.state, order.reason) == (
        State.REJECTED,
        "authorize: DeclinedError: card declined",
    )
    assert (catalog.stock["p_mug"], await payments.state(order.order_id)) == (10, "DECLINED")
    assert store.data.events == []  # a rejected order publishes nothing


async def test_a_refused_capture_voids_the_authorization(orders: Orders) -> None:
    catalog, payments = _peers(orders)
    payments.refuse_capture = True
    with pytest.raises(DependencyError):
        await orders.create("c_1", [Line("p_mug", 1)], "tok_visa")
    [order], _ = await orders.page("c_1", "", 10)
    assert (order.state, order.reason) == (
        State.REJECTED,
        "capture: FailedPrecondition: the card expired",
    )
    assert order.payment is not None
    assert order.payment.state == "VOIDED"  # an authorization: voided, not refunded
    assert (catalog.stock["p_mug"], await payments.state(order.order_id)) == (10, "VOIDED")
    assert await _steps(orders, order.order_id) == [
        ("open", keel.saga.UNDONE),
        ("reserve", keel.saga.UNDONE),
        ("authorize", keel.saga.UNDONE),
        ("capture", keel.saga.REFUSED),
    ]


async def test_a_capture_that_lands_late_is_refunded(orders: Orders) -> None:
    catalog, payments = _peers(orders)
    payments.late_capture = True
    with pytest.raises(DependencyError):
        await orders.create("c_1", [Line("p_mug", 2)], "tok_visa")
    [order], _ = await orders.page("c_1", "", 10)
    assert order.state == State.REJECTED
    assert order.reason.startswith("capture: DeadlineExceeded")
    # capture's refund found nothing captured; the capture landed; authorize's void refunded it
    assert (catalog.stock["p_mug"], await payments.state(order.order_id)) == (10, "REFUNDED")


async def test_an_order_keeps_the_first_reason_not_a_later_compensation_error(
    orders: Orders,
) -> None:
    catalog, payments = _peers(orders)
    payments.refuse_capture = payments.down = True  # and the void cannot reach payments
    with pytest.raises(DependencyError):
        await orders.create("c_1", [Line("p_pot", 2)], "tok_visa")
    [order], _ = await orders.page("c_1", "", 10)
    saga = await keel.saga.show(orders.store.db, order.order_id)
    assert saga is not None
    failing = {s.name: s.error for s in saga.steps}["authorize"]
    assert failing.startswith("compensating authorize")  # the last error: undoing failed
    assert order.state == State.PENDING  # until what was done is undone
    assert order.reason == "capture: FailedPrecondition: the card expired"
    payments.down = False

    async def rejected() -> bool:
        return (await orders.get(order.order_id)).state == State.REJECTED

    await eventually(rejected, timeout=10, what="the order rejected once payments answers")
    final = await orders.get(order.order_id)
    assert final.reason == "capture: FailedPrecondition: the card expired"
    assert (catalog.stock["p_pot"], await payments.state(order.order_id)) == (2, "VOIDED")


async def test_cancelling_refunds_releases_and_publishes_with_the_reason(
    orders: Orders, store: InMemoryStore
) -> None:
    catalog, payments = _peers(orders)
    order = await orders.create("c_1", [Line("p_mug", 4)], "tok_visa")
    cancelled = await orders.cancel(order.order_id, "changed my mind")
    assert (cancelled.state, cancelled.reason) == (State.CANCELLED, "changed my mind")
    assert cancelled.payment is not None
    assert cancelled.payment.state == "REFUNDED"
    assert (catalog.stock["p_mug"], await payments.state(order.order_id)) == (10, "REFUNDED")
    assert [(name, reason) for name, _, reason in store.data.events] == [
        ("OrderPlaced", ""),
        ("OrderCancelled", "changed my mind"),
    ]
    assert await orders.cancel(order.order_id, "again") == cancelled  # nothing changes
    assert [s for _, s in await _steps(orders, f"{order.order_id}/cancel")] == [keel.saga.DONE] * 4


async def test_the_shops_limits_and_currency(store: InMemoryStore) -> None:
    catalog = Catalog(currency="USD")
    settings = OrdersSettings(max_lines=2, max_quantity=5, default_page_size=2, max_page_size=3)
    orders = Orders(store, catalog, Payments(), settings=QUICK, orders_settings=settings)
    with pytest.raises(InvalidOrderError) as caught:
        await orders.create("c_1", [Line("p_mug", 1)] * 3, "tok_visa")
    assert caught.value.field == "lines"
    with pytest.raises(InvalidOrderError) as caught:
        await orders.create("c_1", [Line("p_mug", 1), Line("p_pot", 6)], "tok_visa")
    assert caught.value.field == "lines[1].quantity"
    assert store.data.orders == {}  # refused before anything was done
    order = await orders.create("c_1", [Line("p_mug", 1)], "tok_visa")
    assert (order.state, order.reason) == (
        State.REJECTED,
        "reserve: CurrencyError: priced in USD, the shop takes EUR",
    )
    assert catalog.stock["p_mug"] == 10  # given back
    assert [orders.page_size(n) for n in (0, 1, 3, 500)] == [2, 1, 3, 3]
    await orders.placing.close()


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_CURRENCY", "CHF")
    monkeypatch.setenv("ORDERS_MAX_LINES", "7")
    settings = OrdersSettings()
    assert (settings.currency, settings.max_lines, settings.max_quantity) == ("CHF", 7, 1000)
    monkeypatch.setenv("ORDERS_DEFAULT_PAGE_SIZE", "600")
    with pytest.raises(ValueError, match="default_page_size"):
        OrdersSettings()
