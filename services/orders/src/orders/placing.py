"""Placing and cancelling orders as sagas (keel.saga), recorded in orders' own database.

Placing: open (the PENDING order) → reserve stock (priced in the shop's currency, else the
order turns back) → authorize → capture → confirm (CONFIRMED, OrderPlaced through the outbox).
A failure undoes what was done, last first: capture's compensation refunds a captured payment
(RefundPayment), authorize's voids the authorization (VoidPayment), reserve's releases the
stock, open's marks the order REJECTED with the reason of the first failure (noted before the
first compensation runs, so a compensation failing later does not replace it). Each call to a
peer carries the step's idempotency key, so a saga resumed after a crash never repeats an
effect; compensations name what they undo by the order's id, so they work when the action's
outcome was never recorded (a refund of a payment never captured does nothing; a void of an
order never authorized leaves a VOIDED payment of 0 that a late authorization finds; a capture
that landed after its refund was tried is refunded by the void).

Cancelling: cancel (CANCELLED, OrderCancelled if it was CONFIRMED; refused once SHIPPED) →
refund (a captured payment) → release (the stock) → void (an authorization, as when the order
was cancelled while it was being placed). The first step is the saga's pivot, its point of no
return: a later step that fails is tried again (with its key) until it succeeds; nothing brings
the order back.

The saga id of placing is the order id; of cancelling, `<order id>/cancel`
(`keel saga show orders ID`).

The test hook that stops a saga at a step boundary (ORDERS_TEST_PAUSE_AT) is in orders.calls.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

import keel.saga
from keel import errors
from keel.data import Database
from keel.runtime import config, logs, propagation

from orders.calls import StepCalls
from orders.model import CapturedError, Line, Order, payment_json

if TYPE_CHECKING:
    from orders.domain import Catalog, Orders, Payments

T = TypeVar("T")
Data = dict[str, Any]
log = logs.get_logger("orders.placing")


class DeclinedError(Exception):
    """The payment came back in a state the order cannot go on from (declined, voided)."""


class CurrencyError(Exception):
    """The catalog priced the order in another currency than the shop's."""


def cancel_saga_id(order_id: str) -> str:
    """The id of the saga cancelling `order_id`."""
    return f"{order_id}/cancel"


class Placing:
    """The placing and cancelling sagas over `orders` (its local changes), the catalog and
    payments (ports), recorded in `db`."""

    def __init__(
        self,
        orders: Orders,
        catalog: Catalog,
        payments: Payments,
        db: Database,
        *,
        settings: config.Settings | None = None,
        currency: str = "EUR",
    ) -> None:
        self.orders = orders
        self.currency = currency
        """The shop's currency: an order priced in another turns back."""
        self.catalog = catalog
        self.payments = payments
        self.db = db
        self.place = keel.saga.Saga("place-order", self._place, db, settings=settings)
        self.cancel = keel.saga.Saga("cancel-order", self._cancel, db, settings=settings)
        self.calls = StepCalls()
        self.failures = self.calls.failures
        """The last failed peer call of each saga this process drives (for its caller)."""
        self._tasks: set[asyncio.Task[Any]] = set()

    def recovery(self) -> keel.saga.Recovery:
        """The background task resuming both sagas at start-up (`keel.serve(background=)`)."""
        return keel.saga.Recovery(self.place, self.cancel)

    async def run(
        self, saga: keel.saga.Saga[Data], data: Data, saga_id: str
    ) -> keel.saga.SagaState:
        """Start (or drive) a saga detached from the call (keel.saga's background driving: a
        caller who goes away, or whose deadline passes, does not stop it; one left unfinished
        is tried again after each KEEL_SAGA_BACKOFF delay); its state after the first try."""
        data = {**data, "correlation_id": propagation.correlation_id()}
        self.calls.began(saga_id)
        state = await saga.start(data, saga_id=saga_id, background=True)
        if state.finished or not saga.driving(saga_id):
            self.calls.forget(saga_id)
        else:  # forget the call's details once the background driving ends
            task = asyncio.get_running_loop().create_task(self._forget_after(saga, saga_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return state

    async def _forget_after(self, saga: keel.saga.Saga[Data], saga_id: str) -> None:
        await saga.wait(saga_id)
        self.calls.forget(saga_id)
        self.failures.pop(saga_id, None)  # its caller has had its answer: nobody reads it now

    async def close(self) -> None:
        """Stop the sagas this process drives (they resume at the next start)."""
        await self.place.close()
        await self.cancel.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- placing ------------------------------------------------------------------------------

    async def _place(self, run: keel.saga.Run[Data]) -> None:
        data = run.data
        self.calls.driving(run.id, data["customer_id"], data.get("correlation_id", ""))
        order_id: str = data["order_id"]
        await run.step("open", lambda step: self._open(step, data), self._reject)
        priced = await run.step("reserve", lambda step: self._reserve(step, data), self._release)
        if priced["currency"] != self.currency:
            raise CurrencyError(f"priced in {priced['currency']}, the shop takes {self.currency}")
        payment = await run.step(
            "authorize", lambda step: self._authorize(step, data, priced), self._undo_authorize
        )
        if payment["state"] != "AUTHORIZED":
            raise DeclinedError(payment["decline_reason"] or f"the payment is {payment['state']}")
        captured = await run.step(
            "capture", lambda step: self._capture(step, order_id, payment), self._undo_capture
        )
        if captured["state"] != "CAPTURED":
            raise DeclinedError(f"the payment is {captured['state']}")
        await run.step("confirm", lambda step: self._confirm(step, order_id))

    async def _open(self, step: keel.saga.Step, data: Data) -> None:
        await self.calls.boundary(step, "before")
        lines = tuple(Line(p, q) for p, q in data["lines"])
        order = Order(data["order_id"], data["customer_id"], lines)
        await self.orders.open(order, data.get("request_id", ""))
        await self.calls.boundary(step, "after")

    async def _keep_reason(self, step: keel.saga.Step) -> str:
        """Note on the order why its saga turns back (the saga's first failure), before a
        compensation that may fail keeps it PENDING a while; the reason."""
        state = await keel.saga.show(self.db, step.saga_id)
        reason = state.error if state is not None else ""
        if reason:
            await self.orders.note_reason(step.saga_id, reason)
        return reason

    async def _reject(self, step: keel.saga.Step, _: None) -> None:
        await self.calls.boundary(step, "before")
        reason = await self._keep_reason(step)
        await self.orders.reject(step.saga_id, reason or "the order could not be placed")
        await self.calls.boundary(step, "after")

    async def _reserve(self, step: keel.saga.Step, data: Data) -> Data:
        lines = [Line(p, q) for p, q in data["lines"]]
        order_id = data["order_id"]
        total, currency = await self.calls.call(
            step, lambda: self.catalog.reserve(order_id, lines, metadata=self.calls.metadata(step))
        )
        await self.orders.priced(order_id, total, currency)
        return {"total_cents": total, "currency": currency}

    async def _release(self, step: keel.saga.Step, _: Data | None) -> None:
        await self._keep_reason(step)
        await self.calls.call(
            step, lambda: self.catalog.release(step.saga_id, metadata=self.calls.metadata(step))
        )

    async def _authorize(self, step: keel.saga.Step, data: Data, priced: Data) -> Data:
        order_id = data["order_id"]
        payment = await self.calls.call(
            step,
            lambda: self.payments.authorize(
                order_id,
                priced["total_cents"],
                priced["currency"],
                data["token"],
                metadata=self.calls.metadata(step),
            ),
        )
        await self.orders.paid(order_id, payment)
        return payment_json(payment)

    async def _capture(self, step: keel.saga.Step, order_id: str, payment: Data) -> Data:
        payment_id = payment["payment_id"]
        captured = await self.calls.call(
            step, lambda: self.payments.capture(payment_id, metadata=self.calls.metadata(step))
        )
        await self.orders.paid(order_id, captured)
        return payment_json(captured)

    async def _undo_authorize(self, step: keel.saga.Step, _: Data | None) -> None:
        await self._keep_reason(step)
        await self._void(step)

    async def _undo_capture(self, step: keel.saga.Step, _: Data | None) -> None:
        await self._keep_reason(step)
        await self._refund(step)

    async def _void(self, step: keel.saga.Step) -> None:
        """Void the order's authorization (by the order's id); a payment captured meanwhile
        (a capture that landed after its refund was tried) is refunded instead."""
        order_id = _order_of(step)
        try:
            payment = await self.calls.call(
                step, lambda: self.payments.void(order_id, metadata=self.calls.metadata(step))
            )
        except CapturedError:
            await self._refund(step)
            return
        await self.orders.paid(order_id, payment)

    async def _refund(self, step: keel.saga.Step) -> None:
        """Refund the order's captured payment (by the order's id; nothing captured: nothing)."""
        order_id = _order_of(step)
        payment = await self.calls.call(
            step, lambda: self.payments.refund(order_id, metadata=self.calls.metadata(step))
        )
        if payment is not None:
            await self.orders.paid(order_id, payment)

    async def _confirm(self, step: keel.saga.Step, order_id: str) -> None:
        await self.calls.boundary(step, "before")
        if not await self.orders.confirm(order_id):
            raise errors.FailedPrecondition(
                f"order {order_id} is no longer pending", reason="ORDER_NOT_PENDING"
            )
        await self.calls.boundary(step, "after")

    # -- cancelling ---------------------------------------------------------------------------

    async def _cancel(self, run: keel.saga.Run[Data]) -> None:
        data = run.data
        self.calls.driving(run.id, data.get("customer_id", ""), data.get("correlation_id", ""))
        order_id: str = data["order_id"]
        await run.step("cancel", lambda step: self._mark(step, data), pivot=True)
        await run.step("refund", self._refund)
        await run.step("release", lambda step: self._release_order(step, order_id))
        await run.step("void", self._void)

    async def _mark(self, step: keel.saga.Step, data: Data) -> None:
        await self.calls.boundary(step, "before")
        await self.orders.mark_cancelled(data["order_id"], data["reason"])
        await self.calls.boundary(step, "after")

    async def _release_order(self, step: keel.saga.Step, order_id: str) -> None:
        await self.calls.call(
            step, lambda: self.catalog.release(order_id, metadata=self.calls.metadata(step))
        )


def _order_of(step: keel.saga.Step) -> str:
    """The order a step of a placing (its id) or a cancelling saga (`<id>/cancel`) is about."""
    return step.saga_id.removesuffix("/cancel")
