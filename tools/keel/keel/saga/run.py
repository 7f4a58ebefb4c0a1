"""Running a saga: its steps forward, its compensations backward, a record after each.

The saga's body is ordinary code that reads top to bottom; `run.step(...)` either calls the
action (the first time) or returns what was recorded (when a restarted process replays the body
to continue it). A step's compensation is pushed before its action runs, so a step whose outcome
is unknown (the process died, or the call failed without a final answer) is compensated too.
Once the body goes on past a pivot step, the saga only goes forward (FORWARD).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from keel import errors
from keel.idempotency.call import FINAL_CODES
from keel.runtime import tracing
from keel.runtime.channels import IDEMPOTENCY_KEY
from keel.saga import store
from keel.saga.lease import Lease

T = TypeVar("T")
Data = TypeVar("Data")

TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
"""Errors after which a step's action (or compensation) is tried again with the same key."""


@dataclass(frozen=True, slots=True)
class Step:
    """What an action or compensation gets: which saga and step, and its idempotency key."""

    saga_id: str
    name: str
    key: str
    """`<saga id>/<step>` for the action, `<saga id>/<step>/compensate` for the compensation:
    the same on every attempt and after every restart (`<saga id>/<step>/retry-<n>` once `n`
    operator resumes have called the step again after a refusal)."""
    attempt: int = 0
    """0 for the first call of this process, 1 for its first retry, ..."""
    retried: int = 0
    """How many resumes called the action again after a refusal (0: never)."""

    @property
    def action_key(self) -> str:
        """The key of the step's action (in a compensation: what to undo, by its key)."""
        return action_key(self.saga_id, self.name, self.retried)

    @property
    def metadata(self) -> list[tuple[str, str | bytes]]:
        """Call metadata carrying the key: `client.method(request, metadata=step.metadata)`."""
        return [(IDEMPOTENCY_KEY, self.key)]


def action_key(saga_id: str, name: str, retried: int) -> str:
    """The key of a step's action: `<saga id>/<step>`, `.../retry-<n>` after `n` resumes that
    called it again once refused (so the peer does not replay its stored refusal)."""
    return f"{saga_id}/{name}/retry-{retried}" if retried else f"{saga_id}/{name}"


Action = Callable[[Step], Awaitable[T]]
Compensation = Callable[[Step, T | None], Awaitable[None]]


class SagaError(Exception):
    """The code and the saga's record disagree (see FAILED), or a step name repeats."""


class StepOrderError(SagaError):
    """On replay, the code's steps do not match the recorded ones: the code calls `found` (None:
    it ended) where the record has `expected`, at step `position` (0 for the first)."""

    def __init__(
        self, message: str, *, saga_id: str, position: int, expected: str, found: str | None
    ) -> None:
        super().__init__(message)
        self.saga_id = saga_id
        self.position = position
        self.expected = expected
        self.found = found


class StepRefusedError(Exception):
    """A step's action failed with a final error (recorded): the saga compensates."""


class _UnwindError(Exception):
    """Replaying a compensating saga reached the end of what was done: stop going forward."""


class _RetryLaterError(Exception):
    """A step after the pivot failed without a final answer: the saga is tried again later."""


@dataclass(slots=True)
class _Done:
    """A step that may have had an effect, with its compensation (pushed before its action)."""

    position: int
    name: str
    compensate: Compensation[Any] | None
    result: Any = None
    retried: int = 0


_CHANGED = (
    "the code's steps changed while it ran (keep the recorded steps, in order, for sagas in "
    "flight: add steps after the last, or behind a check on run.data)"
)


class Run(Generic[Data]):
    """One saga being driven: `run.id`, `run.data` and `await run.step(...)`."""

    def __init__(self, state: store.SagaState, backoff: tuple[float, ...], lease: Lease) -> None:
        self.id = state.id
        """The saga's id."""
        self.name = state.name
        """The saga definition's name."""
        self.data: Data = state.data
        """The saga's input, as recorded (JSON)."""
        self.status = state.status
        self.failure = ""
        """Why a step this run called last failed ("" if none did)."""
        self.last = ""
        """The name of the last step that returned (replayed or called)."""
        self._lease = lease
        self._backoff = backoff
        self._steps = state.steps
        self._recorded = {s.position: s for s in state.steps}
        self._names: set[str] = set()
        self._position = 0
        self._committed = False
        self.done: list[_Done] = []

    async def step(
        self,
        name: str,
        action: Action[T],
        compensate: Compensation[T] | None = None,
        *,
        pivot: bool = False,
    ) -> T:
        """Run step `name`: `action(step)` once (its result, a JSON value, is recorded and
        returned; a replay returns the recorded one), with `compensate(step, result)` to undo it
        if a later step fails (result None if the action's outcome was never recorded).

        An action's UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED or ABORTED is retried
        with the same key after each KEEL_SAGA_BACKOFF delay; a final error (INVALID_ARGUMENT,
        NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, OUT_OF_RANGE) means it had no effect:
        recorded as REFUSED, it raises StepRefusedError and the saga compensates the steps before.

        `pivot=True` marks the point of no return (a capture, a shipment): once the body goes on
        past it, the saga is FORWARD and is never compensated; a later step that fails is
        tried again (with the same key) until it succeeds, and one refused stops the saga as
        FAILED for a person to look at.
        """
        position = self._enter(name)
        self.failure = ""
        recorded = self._recorded.get(position)
        retried = recorded.retried if recorded is not None else 0
        entry = _Done(position, name, compensate, retried=retried)
        if recorded is not None and recorded.status == store.DONE:
            entry.result = recorded.result
            self.done.append(entry)
            self._committed = self._committed or pivot
            self.last = name
            result: T = recorded.result
            return result
        if recorded is not None and recorded.status == store.REFUSED:
            raise StepRefusedError(recorded.error)
        if recorded is not None and recorded.status == store.UNDONE:
            raise _UnwindError
        if self.status == store.COMPENSATING:
            if recorded is not None:  # STARTED: its outcome is unknown, so it is undone too
                self.done.append(entry)
            raise _UnwindError
        commit = self._committed and self.status == store.RUNNING
        if commit:
            self.status = store.FORWARD
        forward = self.status == store.FORWARD
        if not forward:
            self.done.append(entry)
        await store.record_step(
            self._lease,
            position,
            name,
            store.STARTED,
            saga_status=store.FORWARD if commit else None,
        )
        try:
            with step_span(self, name, undo=False):
                key = action_key(self.id, name, retried)
                value = await attempts(
                    lambda attempt: action(Step(self.id, name, key, attempt, retried)),
                    self._backoff,
                )
        except errors.KeelError as error:
            if error.code() not in FINAL_CODES:
                await self._failed(position, name, error, forward)
                raise
            if not forward:
                self.done.pop()
            self.failure = describe(name, error)
            await store.record_step(self._lease, position, name, store.REFUSED, error=self.failure)
            raise StepRefusedError(self.failure) from error
        except Exception as error:
            await self._failed(position, name, error, forward)
            raise
        entry.result = json.loads(json.dumps(value))  # what a replay would return
        await store.record_step(self._lease, position, name, store.DONE, result=entry.result)
        self._committed = self._committed or pivot
        self.last = name
        returned: T = entry.result
        return returned

    def _enter(self, name: str) -> int:
        """The position of the step called `name`: refused if the name repeats, or if the
        record has another step there."""
        if name in self._names:
            raise SagaError(f"step name {name!r} is used twice in saga {self.id}")
        self._names.add(name)
        position = self._position
        self._position += 1
        recorded = self._recorded.get(position)
        if recorded is not None and recorded.name != name:
            raise StepOrderError(
                f"step {position + 1} of saga {self.id} is {name!r} in the code but "
                f"{recorded.name!r} in its record ({self._history()}): {_CHANGED}",
                saga_id=self.id,
                position=position,
                expected=recorded.name,
                found=name,
            )
        return position

    def unreplayed(self) -> StepOrderError | None:
        """Once the body has ended: the error if the record has steps it did not reach."""
        missed = self._recorded.get(self._position)
        if missed is None:
            return None
        return StepOrderError(
            f"saga {self.id} ends after {self._position} step(s) in the code but its record "
            f"has step {missed.position + 1} {missed.name!r} ({self._history()}): {_CHANGED}",
            saga_id=self.id,
            position=missed.position,
            expected=missed.name,
            found=None,
        )

    def _history(self) -> str:
        steps = ", ".join(f"{s.position + 1}. {s.name} {s.status}" for s in self._steps)
        return f"recorded: {steps}"

    async def _failed(self, position: int, name: str, error: Exception, forward: bool) -> None:
        """Note the failure of an action whose outcome is unknown; after the pivot, the saga
        is tried again later instead of compensating."""
        self.failure = describe(name, error)
        await store.step_failed(self._lease, position, self.failure)
        if forward:
            raise _RetryLaterError(self.failure) from error


@contextmanager
def step_span(run: Run[Any], name: str, *, undo: bool) -> Iterator[None]:
    """A span around a step's action (or compensation), its calls' spans within it."""
    tracer = tracing.tracer()
    if tracer is None:
        yield
        return
    attributes = {"keel.saga.name": run.name, "keel.saga.id": run.id, "keel.saga.step": name}
    label = f"saga {run.name} {'undo ' if undo else ''}{name}"
    with tracer.start_as_current_span(label, attributes=attributes):
        yield


async def attempts(call: Callable[[int], Awaitable[T]], backoff: tuple[float, ...]) -> T:
    """`call(attempt)`, again after each delay of `backoff` while it fails transiently."""
    for attempt, delay in enumerate((*backoff, None)):
        try:
            return await call(attempt)
        except errors.KeelError as error:
            if error.code() not in TRANSIENT_CODES or delay is None:
                raise
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def describe(name: str, error: BaseException) -> str:
    """One line for the record: the step and the error."""
    return f"{name}: {type(error).__name__}: {error}"
