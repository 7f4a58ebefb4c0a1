"""What the order sagas' steps send to catalog and payments, and the test hook at their
boundaries (see orders.placing).

Test hook (off by default, for tests only): ORDERS_TEST_PAUSE_AT=`CUSTOMER=BOUNDARY,...`
stops the first saga of each named customer at its boundary for good (the test then SIGKILLs
the process, and a restart without the hook resumes it), after logging "saga paused for a
test". Boundaries: `before:STEP` (just before the step's call), `after:STEP` (just after it
returned or failed, before the saga records it), `before:undo:STEP`, `after:undo:STEP`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import keel.saga
from keel import errors
from keel.runtime import logs, propagation
from keel.runtime.channels import IDEMPOTENCY_KEY
from keel.runtime.context import CORRELATION_HEADER

from orders.model import DependencyError

T = TypeVar("T")
log = logs.get_logger("orders.placing")
PAUSE_AT = "ORDERS_TEST_PAUSE_AT"
"""Test-only: `CUSTOMER=BOUNDARY,...` where sagas stop for good (see the docstring)."""


def undoing(step: keel.saga.Step) -> bool:
    """Whether `step` is a compensation (its key ends in `/compensate`)."""
    return step.key.endswith("/compensate")


class StepCalls:
    """Per saga this process drives: its customer (for the test hook), the correlation id and,
    for a saga started for a call, what that call passes on; the last failed peer call."""

    def __init__(self) -> None:
        hook = os.environ.get(PAUSE_AT, "")
        self._pauses = dict(item.split("=", 1) for item in hook.split(",") if "=" in item)
        self.customers: dict[str, str] = {}
        self.correlation: dict[str, str] = {}
        self.caller: dict[str, list[tuple[str, str]]] = {}
        """What the call that started a saga passes on (the user's forwarded token and
        identity, trace context) and its service as the caller: in memory only, never
        recorded, never resumed with."""
        self.failures: dict[str, DependencyError] = {}
        """The last failed peer call of each saga's actions (for the call that started it)."""

    def began(self, saga_id: str) -> None:
        """Note what the call being handled passes on to saga `saga_id`'s actions."""
        current = propagation.inbound()
        if current is not None:
            passed = [*propagation.passed_on(current), (propagation.CALLER, current.service)]
            self.caller[saga_id] = passed

    def driving(self, saga_id: str, customer: str, correlation: str) -> None:
        """Note a saga's customer and correlation id (its body calls it on every replay)."""
        self.customers[saga_id] = customer
        self.correlation[saga_id] = correlation

    def forget(self, saga_id: str) -> None:
        self.customers.pop(saga_id, None)
        self.correlation.pop(saga_id, None)
        self.caller.pop(saga_id, None)

    async def boundary(self, step: keel.saga.Step, when: str) -> None:
        """The test hook: stop here for good if a test asked for it."""
        if not self._pauses:
            return
        customer = self.customers.get(step.saga_id, "")
        at = f"{when}:{'undo:' if undoing(step) else ''}{step.name}"
        if self._pauses.get(customer) == at:
            del self._pauses[customer]
            log.warning("saga paused for a test", customer=customer, at=at)
            await asyncio.Event().wait()  # until the test kills the process

    def metadata(self, step: keel.saga.Step) -> list[tuple[str, str]]:
        """The step's idempotency key and the correlation id of the call that began the saga;
        for an action of a saga this process started for a call, what that call passes on
        (the user's token: the peers see the user, as in the call). Compensations, and steps
        resumed later, are the service's own work."""
        metadata = [(IDEMPOTENCY_KEY, step.key)]
        if correlation := self.correlation.get(step.saga_id):
            metadata.append((CORRELATION_HEADER, correlation))
        if not undoing(step):
            metadata += self.caller.get(step.saga_id, ())
        return metadata

    async def call(self, step: keel.saga.Step, call: Callable[[], Awaitable[T]]) -> T:
        """A peer call at a step boundary; a failure becomes the peer's typed error, which
        tells the saga to retry (transient) or to compensate (final)."""
        await self.boundary(step, "before")
        try:
            result = await call()
        except DependencyError as error:
            await self.boundary(step, "after")
            if not undoing(step):
                self.failures[step.saga_id] = error
            if isinstance(error.cause, errors.KeelError):
                raise error.cause from None
            kind = errors.Unavailable if error.uncertain else errors.FailedPrecondition
            raise kind(str(error)) from None
        await self.boundary(step, "after")
        return result
