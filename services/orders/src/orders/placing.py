"""Placing and cancelling orders as sagas (keel.saga), recorded in orders' own database.

Placing: open (the PENDING order) → reserve stock → authorize → capture → confirm (CONFIRMED,
OrderPlaced through the outbox). A failure undoes what was done, last first: refund (a
captured payment) or void (an authorized one), release the stock, and REJECTED with the reason
(the saga's error). Each call to a peer carries the step's idempotency key, so a saga resumed
after a crash never repeats an effect; compensations name what they undo by the order's id,
so they work when the action's outcome was never recorded.

Cancelling: cancel (CANCELLED, OrderCancelled if it was CONFIRMED; refused once SHIPPED) →
refund → release. The first step is the point of no return: if a later one fails, its
compensation finishes the refund and the release (retried until they succeed), it never
brings the order back.

The saga id of placing is the order id; of cancelling, `<order id>/cancel`
(`keel saga show orders ID`).

Test hook (off by default, for tests only): ORDERS_TEST_PAUSE_AT=`CUSTOMER=BOUNDARY,...`
stops the first saga of each named customer at its boundary for good (the test then SIGKILLs
the process, and a restart without the hook resumes it), after logging "saga paused for a
test". Boundaries: `before:STEP` (just before the step's call), `after:STEP` (just after it
returned or failed, before the saga records it), `before:undo:STEP`, `after:undo:STEP`.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import keel.saga
from keel import errors
from keel.data import Database
from keel.runtime import config, logs, propagation
from keel.runtime.channels import IDEMPOTENCY_KEY
from keel.runtime.context import CORRELATION_HEADER
from opentelemetry import context as otel_context

from orders.model import DependencyError, Line, Order, Payment

if TYPE_CHECKING:
    from orders.domain import Catalog, Orders, Payments

T = TypeVar("T")
Data = dict[str, Any]
log = logs.get_logger("orders.placing")
PAUSE_AT = "ORDERS_TEST_PAUSE_AT"
"""Test-only: `CUSTOMER=BOUNDARY,...` where sagas stop for good (see the docstring)."""


class DeclinedError(Exception):
    """The payment came back in a state the order cannot go on from (declined, voided)."""


def payment_json(payment: Payment) -> Data:
    """A step's recorded result: the payment as JSON."""
    return {
        "payment_id": payment.payment_id,
        "state": payment.state,
        "amount_cents": payment.amount_cents,
        "currency": payment.currency,
        "decline_reason": payment.decline_reason,
    }


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
    ) -> None:
        self.orders = orders
        self.catalog = catalog
        self.payments = payments
        self.db = db
        self.place = keel.saga.Saga("place-order", self._place, db, settings=settings)
        self.cancel = keel.saga.Saga("cancel-order", self._cancel, db, settings=settings)
        self.failures: dict[str, DependencyError] = {}
        """The last failed peer call of each saga this process drives (for its caller)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        hook = os.environ.get(PAUSE_AT, "")
        self._pauses = dict(item.split("=", 1) for item in hook.split(",") if "=" in item)
        self._customers: dict[str, str] = {}
        self._correlation: dict[str, str] = {}
        self._caller: dict[str, list[tuple[str, str]]] = {}
        """Per saga this process started for a call: what that call passes on (the user's
        forwarded token and identity, trace context) and its service as the caller."""

    def recovery(self) -> keel.saga.Recovery:
        """The background task resuming both sagas at start-up (`keel.serve(background=)`)."""
        return keel.saga.Recovery(self.place, self.cancel)

    async def run(
        self, saga: keel.saga.Saga[Data], data: Data, saga_id: str
    ) -> keel.saga.SagaState:
        """Start (or drive) a saga in a task of its own, so that a caller who goes away (or
        whose deadline passes) does not stop it; one left unfinished (a compensation failing)
        is tried again every KEEL_SAGA_LEASE."""
        data = {**data, "correlation_id": propagation.correlation_id()}
        current = propagation.inbound()
        if current is not None:  # kept in memory only: never recorded, never resumed with
            passed = [*propagation.passed_on(current), (propagation.CALLER, current.service)]
            self._caller[saga_id] = passed
        task = self._spawn(saga.start(data, saga_id=saga_id), trace=otel_context.get_current())
        state = await asyncio.shield(task)
        if state.finished:
            self._forget(saga_id)
        else:
            self._spawn(self._finish(saga, saga_id))
        return state

    def _forget(self, saga_id: str) -> None:
        self._customers.pop(saga_id, None)
        self._correlation.pop(saga_id, None)
        self._caller.pop(saga_id, None)

    def _spawn(
        self, work: Coroutine[Any, Any, T], trace: otel_context.Context | None = None
    ) -> asyncio.Task[T]:
        """A task in a context of its own: the saga is the service's own work, not bound by
        the deadline (or identity) of the call that started it; with `trace`, its calls are
        spans of that call's trace."""
        fresh = contextvars.Context()
        if trace is not None:
            fresh.run(otel_context.attach, trace)
        task = asyncio.get_running_loop().create_task(work, context=fresh)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _finish(self, saga: keel.saga.Saga[Data], saga_id: str) -> None:
        while True:
            await asyncio.sleep(saga.settings.saga_lease)
            try:
                if (await saga.run(saga_id)).finished:
                    self._forget(saga_id)
                    return
            except Exception:
                log.exception("saga retry failed", saga=saga_id)

    async def close(self) -> None:
        """Stop the sagas this process drives (they resume at the next start)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the test hook and the calls to peers ---------------------------------------------

    async def _boundary(self, step: keel.saga.Step, when: str) -> None:
        if not self._pauses:
            return
        undo = "undo:" if step.key.endswith("/compensate") else ""
        customer = self._customers.get(step.saga_id, "")
        at = f"{when}:{undo}{step.name}"
        if self._pauses.get(customer) == at:
            del self._pauses[customer]
            log.warning("saga paused for a test", customer=customer, at=at)
            await asyncio.Event().wait()  # until the test kills the process

    def _metadata(self, step: keel.saga.Step) -> list[tuple[str, str]]:
        """The step's idempotency key and the correlation id of the call that began the saga;
        for an action of a saga this process started for a call, what that call passes on
        (the user's token: the peers see the user, as in the call). Compensations, and steps
        resumed later, are the service's own work."""
        metadata = [(IDEMPOTENCY_KEY, step.key)]
        if correlation := self._correlation.get(step.saga_id):
            metadata.append((CORRELATION_HEADER, correlation))
        if not step.key.endswith("/compensate"):
            metadata += self._caller.get(step.saga_id, ())
        return metadata

    async def _call(self, step: keel.saga.Step, call: Callable[[], Awaitable[T]]) -> T:
        """A peer call at a step boundary; a failure becomes the peer's typed error, which
        tells the saga to retry (transient) or to compensate (final)."""
        await self._boundary(step, "before")
        try:
            result = await call()
        except DependencyError as error:
            await self._boundary(step, "after")
            if not step.key.endswith("/compensate"):
                self.failures[step.saga_id] = error
            if isinstance(error.cause, errors.KeelError):
                raise error.cause from None
            kind = errors.Unavailable if error.uncertain else errors.FailedPrecondition
            raise kind(str(error)) from None
        await self._boundary(step, "after")
        return result

    # -- placing ------------------------------------------------------------------------------

    async def _place(self, run: keel.saga.Run[Data]) -> None:
        data = run.data
        self._customers[run.id] = data["customer_id"]
        self._correlation[run.id] = data.get("correlation_id", "")
        order_id: str = data["order_id"]
        await run.step("open", lambda step: self._open(step, data), self._reject)
        priced = await run.step("reserve", lambda step: self._reserve(step, data), self._release)
        payment = await run.step(
            "authorize", lambda step: self._authorize(step, data, priced), self._settle
        )
        if payment["state"] != "AUTHORIZED":
            raise DeclinedError(payment["decline_reason"] or f"the payment is {payment['state']}")
        captured = await run.step(
            "capture", lambda step: self._capture(step, order_id, payment), self._settle
        )
        if captured["state"] != "CAPTURED":
            raise DeclinedError(f"the payment is {captured['state']}")
        await run.step("confirm", lambda step: self._confirm(step, order_id))

    async def _open(self, step: keel.saga.Step, data: Data) -> None:
        await self._boundary(step, "before")
        lines = tuple(Line(p, q) for p, q in data["lines"])
        order = Order(data["order_id"], data["customer_id"], lines)
        await self.orders.open(order, data.get("request_id", ""))
        await self._boundary(step, "after")

    async def _keep_reason(self, step: keel.saga.Step) -> str:
        """Note why the saga turns back on the order, before a compensation that may fail
        (and overwrite the saga's error with its own); the reason."""
        state = await keel.saga.show(self.db, step.saga_id)
        reason = state.error if state is not None else ""
        if reason and not reason.startswith("compensating "):
            await self.orders.note_reason(step.saga_id, reason)
        return reason

    async def _reject(self, step: keel.saga.Step, _: None) -> None:
        await self._boundary(step, "before")
        reason = await self._keep_reason(step)
        await self.orders.reject(step.saga_id, reason or "the order could not be placed")
        await self._boundary(step, "after")

    async def _reserve(self, step: keel.saga.Step, data: Data) -> Data:
        lines = [Line(p, q) for p, q in data["lines"]]
        order_id = data["order_id"]
        total, currency = await self._call(
            step, lambda: self.catalog.reserve(order_id, lines, metadata=self._metadata(step))
        )
        await self.orders.priced(order_id, total, currency)
        return {"total_cents": total, "currency": currency}

    async def _release(self, step: keel.saga.Step, _: Data | None) -> None:
        await self._keep_reason(step)
        await self._call(
            step, lambda: self.catalog.release(step.saga_id, metadata=self._metadata(step))
        )

    async def _authorize(self, step: keel.saga.Step, data: Data, priced: Data) -> Data:
        order_id = data["order_id"]
        payment = await self._call(
            step,
            lambda: self.payments.authorize(
                order_id,
                priced["total_cents"],
                priced["currency"],
                data["token"],
                metadata=self._metadata(step),
            ),
        )
        await self.orders.paid(order_id, payment)
        return payment_json(payment)

    async def _capture(self, step: keel.saga.Step, order_id: str, payment: Data) -> Data:
        payment_id = payment["payment_id"]
        captured = await self._call(
            step, lambda: self.payments.capture(payment_id, metadata=self._metadata(step))
        )
        await self.orders.paid(order_id, captured)
        return payment_json(captured)

    async def _settle(self, step: keel.saga.Step, _: Data | None) -> None:
        """Void the order's payment, or refund it once captured (by the order's id)."""
        order_id = step.saga_id.removesuffix("/cancel")
        await self._keep_reason(step)
        payment = await self._call(
            step, lambda: self.payments.settle(order_id, metadata=self._metadata(step))
        )
        await self.orders.paid(order_id, payment)

    async def _confirm(self, step: keel.saga.Step, order_id: str) -> None:
        await self._boundary(step, "before")
        if not await self.orders.confirm(order_id):
            raise errors.FailedPrecondition(
                f"order {order_id} is no longer pending", reason="ORDER_NOT_PENDING"
            )
        await self._boundary(step, "after")

    # -- cancelling ---------------------------------------------------------------------------

    async def _cancel(self, run: keel.saga.Run[Data]) -> None:
        data = run.data
        self._customers[run.id] = data.get("customer_id", "")
        self._correlation[run.id] = data.get("correlation_id", "")
        order_id: str = data["order_id"]
        await run.step("cancel", lambda step: self._mark(step, data), self._settle_all)
        await run.step("refund", lambda step: self._settle(step, None))
        await run.step("release", lambda step: self._release_order(step, order_id))

    async def _mark(self, step: keel.saga.Step, data: Data) -> None:
        await self._boundary(step, "before")
        await self.orders.mark_cancelled(data["order_id"], data["reason"])
        await self._boundary(step, "after")

    async def _release_order(self, step: keel.saga.Step, order_id: str) -> None:
        await self._call(
            step, lambda: self.catalog.release(order_id, metadata=self._metadata(step))
        )

    async def _settle_all(self, step: keel.saga.Step, _: None) -> None:
        """The cancel went through but a later step failed: finish its refund and release."""
        order_id = step.saga_id.removesuffix("/cancel")
        await self._settle(step, None)
        await self._call(
            step, lambda: self.catalog.release(order_id, metadata=self._metadata(step))
        )
