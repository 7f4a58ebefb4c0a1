"""`keel.saga.Saga`: a named saga definition that starts, drives and resumes sagas."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic

from keel.data import Database, new_id
from keel.runtime import config, logs
from keel.saga import store
from keel.saga.run import (
    Data,
    Run,
    SagaError,
    Step,
    StepRefusedError,
    _UnwindError,
    attempts,
    describe,
)

log = logs.get_logger("keel.saga")

Body = Callable[[Run[Data]], Awaitable[None]]


class Saga(Generic[Data]):
    """A saga definition: its name, its body and the service's database.

        async def transfer(run: keel.saga.Run[dict[str, Any]]) -> None:
            await run.step("debit", debit, compensate=refund)
            await run.step("credit", credit)

        transfers = keel.saga.Saga("transfer", transfer, db)
        state = await transfers.start({"amount": 5})      # runs it; COMPLETED or COMPENSATED
        await transfers.resume()                          # at start-up: finishes the others

    The body must take the same steps, in the same order, when replayed with the same data and
    step results: decisions come from `run.data` and step results, not from clocks or reads.
    """

    def __init__(
        self, name: str, body: Body[Data], db: Database, *, settings: config.Settings | None = None
    ) -> None:
        self.name = name
        self.body = body
        self.db = db
        self._settings = settings

    @property
    def settings(self) -> config.Settings:
        return self._settings or config.current()

    async def start(self, data: Data, *, saga_id: str | None = None) -> store.SagaState:
        """Record a saga with input `data` (a JSON value) and drive it until it ends (or waits
        for a later resume); its state. An existing `saga_id` is driven instead if free."""
        saga_id = saga_id or new_id()
        if await store.create(self.db, saga_id, self.name, data, self.settings.saga_lease):
            return await self._drive(saga_id)
        return await self.run(saga_id)

    async def run(self, saga_id: str) -> store.SagaState:
        """Drive saga `saga_id` if it is unfinished and no live process holds it; its state."""
        if await store.claim(self.db, saga_id, self.settings.saga_lease):
            return await self._drive(saga_id)
        state = await store.load(self.db, saga_id)
        if state is None:
            raise KeyError(f"no saga {saga_id!r}")
        return state

    async def resume(self, *, wait: bool = True) -> list[store.SagaState]:
        """Drive every unfinished saga of this name (at start-up: those a stopped process left)
        and return the state of each. A saga another live process holds is left to it; with
        `wait`, it is tried again once its lease ends, until it is no longer held."""
        seen: dict[str, store.SagaState] = {}
        while True:
            held = []
            for saga_id, _ in await store.unfinished(self.db, self.name):
                state = seen[saga_id] = await self.run(saga_id)
                if not state.finished and state.lease_until is not None:
                    held.append(state.lease_until)
            if not wait or not held:
                return list(seen.values())
            delay = (min(held) - store.now()).total_seconds()
            await asyncio.sleep(max(delay, 0.0) + 0.05)

    async def _drive(self, saga_id: str) -> store.SagaState:
        state = await store.load(self.db, saga_id)
        assert state is not None
        lease = self.settings.saga_lease
        run: Run[Data] = Run(state, self.settings.saga_backoff, lease, self.db)
        try:
            await self.body(run)
        except _UnwindError:
            pass
        except SagaError as error:
            log.error("saga stopped", saga=saga_id, name=self.name, error=str(error))
            await store.set_status(self.db, saga_id, store.FAILED, lease, error=str(error))
            return await self._state(saga_id)
        except asyncio.CancelledError:
            await asyncio.shield(store.release(self.db, saga_id))
            raise
        except Exception as error:  # a step failed, or the body raised: undo what was done
            if run.status == store.RUNNING:
                reason = str(error) if isinstance(error, StepRefusedError) else None
                reason = reason or describe(_last_step(run), error)
                log.info("saga compensating", saga=saga_id, name=self.name, reason=reason)
                await store.set_status(self.db, saga_id, store.COMPENSATING, lease, error=reason)
                run.status = store.COMPENSATING
        else:
            if run.status == store.RUNNING:
                await store.set_status(self.db, saga_id, store.COMPLETED, lease)
                return await self._state(saga_id)
        if await self._compensate(run):
            await store.set_status(self.db, saga_id, store.COMPENSATED, lease)
        else:
            await store.release(self.db, saga_id)
        return await self._state(saga_id)

    async def _compensate(self, run: Run[Data]) -> bool:
        """Undo the steps that may have had an effect, last first; False if one still fails."""
        lease = self.settings.saga_lease
        for done in reversed(run.done):
            compensate = done.compensate
            if compensate is not None:
                key = f"{run.id}/{done.name}/compensate"

                def call(attempt: int, fn: Any = compensate, key: str = key, at: Any = done) -> Any:
                    return fn(Step(run.id, at.name, key, attempt), at.result)

                try:
                    await attempts(call, self.settings.saga_backoff)
                except Exception as error:
                    reason = f"compensating {describe(done.name, error)}"
                    log.warning("saga compensation failed", saga=run.id, error=reason)
                    await store.set_status(self.db, run.id, store.COMPENSATING, lease, error=reason)
                    return False
            await store.record_step(
                self.db, run.id, done.position, done.name, store.UNDONE, lease=lease
            )
        return True

    async def _state(self, saga_id: str) -> store.SagaState:
        state = await store.load(self.db, saga_id)
        assert state is not None
        return state


def _last_step(run: Run[Any]) -> str:
    return run.done[-1].name if run.done else "saga"


async def show(db: Database, saga_id: str) -> store.SagaState | None:
    """The recorded state of saga `saga_id` (status, error, each step), or None."""
    return await store.load(db, saga_id)


class Recovery:
    """A background task (`keel.serve(..., background=[keel.saga.Recovery(a, b)])`) that resumes
    the sagas' unfinished runs at start-up, and again every KEEL_SAGA_LEASE while any remain."""

    def __init__(self, *sagas: Saga[Any]) -> None:
        self.sagas = sagas
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="keel-saga-recovery")

    async def idle(self) -> None:
        """Wait until no saga is left unfinished (the task's loop has ended)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            left = False
            for saga in self.sagas:
                try:
                    states = await saga.resume(wait=False)
                except Exception:
                    log.exception("saga recovery failed", name=saga.name)
                    left = True
                    continue
                left = left or any(not s.finished for s in states)
                left = left or bool(await store.unfinished(saga.db, saga.name))
            if not left:
                return
            await asyncio.sleep(min(s.settings.saga_lease for s in self.sagas))
