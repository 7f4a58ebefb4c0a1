"""Running a saga: its steps forward, its compensations backward, a record after each.

The saga's body is ordinary code that reads top to bottom; `run.step(...)` either calls the
action (the first time) or returns what was recorded (when a restarted process replays the body
to continue it). A step's compensation is pushed before its action runs, so a step whose outcome
is unknown (the process died, or the call failed without a final answer) is compensated too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from keel import errors
from keel.idempotency.call import FINAL_CODES
from keel.runtime.channels import IDEMPOTENCY_KEY
from keel.saga import store

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
    the same on every attempt and after every restart."""
    attempt: int = 0
    """0 for the first call of this process, 1 for its first retry, ..."""

    @property
    def action_key(self) -> str:
        """The key of the step's action (in a compensation: what to undo, by its key)."""
        return f"{self.saga_id}/{self.name}"

    @property
    def metadata(self) -> list[tuple[str, str | bytes]]:
        """Call metadata carrying the key: `client.method(request, metadata=step.metadata)`."""
        return [(IDEMPOTENCY_KEY, self.key)]


Action = Callable[[Step], Awaitable[T]]
Compensation = Callable[[Step, T | None], Awaitable[None]]


class SagaError(Exception):
    """The code and the saga's record disagree (see FAILED), or a step name repeats."""


class StepRefusedError(Exception):
    """A step's action failed with a final error (recorded): the saga compensates."""


class _UnwindError(Exception):
    """Replaying a compensating saga reached the end of what was done: stop going forward."""


@dataclass(slots=True)
class _Done:
    """A step that may have had an effect, with its compensation (pushed before its action)."""

    position: int
    name: str
    compensate: Compensation[Any] | None
    result: Any = None


class Run(Generic[Data]):
    """One saga being driven: `run.id`, `run.data` and `await run.step(...)`."""

    def __init__(
        self, state: store.SagaState, backoff: tuple[float, ...], lease: float, db: Any
    ) -> None:
        self.id = state.id
        """The saga's id."""
        self.data: Data = state.data
        """The saga's input, as recorded (JSON)."""
        self.status = state.status
        self._db = db
        self._backoff = backoff
        self._lease = lease
        self._recorded = {s.position: s for s in state.steps}
        self._names: set[str] = set()
        self._position = 0
        self.done: list[_Done] = []

    async def step(
        self, name: str, action: Action[T], compensate: Compensation[T] | None = None
    ) -> T:
        """Run step `name`: `action(step)` once (its result, a JSON value, is recorded and
        returned; a replay returns the recorded one), with `compensate(step, result)` to undo it
        if a later step fails (result None if the action's outcome was never recorded).

        An action's UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED or ABORTED is retried
        with the same key after each KEEL_SAGA_BACKOFF delay; a final error (INVALID_ARGUMENT,
        NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, OUT_OF_RANGE) means it had no effect:
        recorded as REFUSED, it raises StepRefusedError and the saga compensates the steps before.
        """
        if name in self._names:
            raise SagaError(f"step name {name!r} is used twice in saga {self.id}")
        self._names.add(name)
        position = self._position
        self._position += 1
        recorded = self._recorded.get(position)
        if recorded is not None and recorded.name != name:
            raise SagaError(
                f"step {position + 1} of saga {self.id} is {name!r} in the code but "
                f"{recorded.name!r} in its record: the code changed while it ran"
            )
        entry = _Done(position, name, compensate)
        if recorded is not None and recorded.status == store.DONE:
            entry.result = recorded.result
            self.done.append(entry)
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
        self.done.append(entry)
        await store.record_step(self._db, self.id, position, name, store.STARTED, lease=self._lease)
        try:
            value = await attempts(
                lambda attempt: action(Step(self.id, name, f"{self.id}/{name}", attempt)),
                self._backoff,
            )
        except errors.KeelError as error:
            if error.code() not in FINAL_CODES:
                raise
            self.done.pop()
            reason = describe(name, error)
            await store.record_step(
                self._db, self.id, position, name, store.REFUSED, lease=self._lease, error=reason
            )
            raise StepRefusedError(reason) from error
        entry.result = json.loads(json.dumps(value))  # what a replay would return
        await store.record_step(
            self._db, self.id, position, name, store.DONE, lease=self._lease, result=entry.result
        )
        returned: T = entry.result
        return returned


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
