"""`keel.saga.Saga`: a named saga definition that starts, drives and resumes sagas."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Generic

from keel.data import Database, new_id
from keel.runtime import config, logs, propagation
from keel.saga import store
from keel.saga.drive import drive
from keel.saga.lease import Lease, now
from keel.saga.run import Data, Run

log = logs.get_logger("keel.saga")

Body = Callable[[Run[Data]], Awaitable[None]]


class Saga(Generic[Data]):
    """A saga definition: its name, its body and the service's database.

        async def transfer(run: keel.saga.Run[dict[str, Any]]) -> None:
            await run.step("debit", debit, compensate=refund)
            await run.step("credit", credit)

        transfers = keel.saga.Saga("transfer", transfer, db)
        state = await transfers.start({"amount": 5})      # runs it; COMPLETED or COMPENSATED
        state = await transfers.start(data, background=True)  # for a call: see start
        await transfers.resume()                          # in a script: finishes the others

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
        self._driving: dict[str, asyncio.Task[None]] = {}

    @property
    def settings(self) -> config.Settings:
        return self._settings or config.current()

    async def start(
        self, data: Data, *, saga_id: str | None = None, background: bool = False
    ) -> store.SagaState:
        """Record a saga with input `data` (a JSON value) and drive it until it ends (or waits
        for a later pass); its state. An existing `saga_id` is driven instead if free.

        With `background`, the saga is driven in a task of its own, detached from the calling
        task (`keel.runtime.propagation.detached()`: not bound by the call's deadline,
        cancellation or identity; in the call's trace, with its correlation id): `start`
        returns the state after the first attempt, and a saga left unfinished (a compensation,
        or a step after the pivot, still failing) is tried again after each KEEL_SAGA_BACKOFF
        delay (the last one repeating) until it ends or `close()` stops it. The caller going
        away does not stop it."""
        saga_id = saga_id or new_id()
        if background:
            first: asyncio.Future[store.SagaState] = asyncio.get_running_loop().create_future()
            if not self._spawn(saga_id, self._keep_driving(saga_id, data=data, first=first)):
                return await self._state(saga_id)
            return await asyncio.shield(first)
        lease = await store.create(self.db, saga_id, self.name, data, self.settings.saga_lease)
        if lease is not None:
            return await drive(self, lease)
        return await self.run(saga_id)

    async def launch(self, data: Data, *, saga_id: str | None = None) -> store.SagaState:
        """Record a saga with input `data` and return its state at once (RUNNING); it is driven
        in the background as with `start(..., background=True)`. `await saga.wait(id)` waits
        for that driving to end."""
        saga_id = saga_id or new_id()
        lease = await store.create(self.db, saga_id, self.name, data, self.settings.saga_lease)
        self._spawn(saga_id, self._keep_driving(saga_id, lease=lease))
        return await self._state(saga_id)

    async def run(self, saga_id: str) -> store.SagaState:
        """Drive saga `saga_id` if it is unfinished and no live process holds it; its state."""
        lease = await store.claim(self.db, saga_id, self.settings.saga_lease)
        if lease is not None:
            return await drive(self, lease)
        return await self._state(saga_id)

    async def resume(self, *, wait: bool = True) -> list[store.SagaState]:
        """Drive every unfinished saga of this name (in a script: those a stopped process left)
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
            delay = (min(held) - now()).total_seconds()
            await asyncio.sleep(max(delay, 0.0) + 0.05)

    def driving(self, saga_id: str) -> bool:
        """Whether this process drives saga `saga_id` in the background."""
        return saga_id in self._driving

    async def wait(self, saga_id: str) -> store.SagaState:
        """Wait until this process no longer drives saga `saga_id` in the background (it
        ended, another process holds it, or `close()` stopped it); its state."""
        task = self._driving.get(saga_id)
        if task is not None:
            await asyncio.wait({task})
        return await self._state(saga_id)

    async def close(self) -> None:
        """Stop the sagas this process drives in the background: each releases its lease and
        is resumed by the next pass of a `Recovery` (here or in another process)."""
        tasks = list(self._driving.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, saga_id: str, work: Coroutine[Any, Any, None]) -> bool:
        """Drive `saga_id` in a detached task, unless this process already does (False)."""
        if saga_id in self._driving:
            work.close()
            return False
        loop = asyncio.get_running_loop()
        task = loop.create_task(work, name=f"keel-saga-{saga_id}", context=propagation.detached())
        self._driving[saga_id] = task
        task.add_done_callback(lambda done: self._forget(saga_id, done))
        return True

    def _forget(self, saga_id: str, task: asyncio.Task[None]) -> None:
        if self._driving.get(saga_id) is task:
            del self._driving[saga_id]

    async def _keep_driving(
        self,
        saga_id: str,
        *,
        data: Any = None,
        lease: Lease | None = None,
        first: asyncio.Future[store.SagaState] | None = None,
    ) -> None:
        """Drive the saga until it ends (or another process holds it), again after each
        backoff delay; `first` gets the state after the first attempt (or its error)."""
        delays = _delays(self.settings.saga_backoff)
        try:
            if first is not None:
                lease = await store.create(
                    self.db, saga_id, self.name, data, self.settings.saga_lease
                )
            while True:
                try:
                    if lease is None:
                        lease = await store.claim(self.db, saga_id, self.settings.saga_lease)
                    state = await (drive(self, lease) if lease else self._state(saga_id))
                except Exception as error:
                    if first is not None:
                        raise
                    log.warning("saga attempt failed", saga=saga_id, error=repr(error))
                else:
                    if first is not None:
                        first.set_result(state)
                        first = None
                    if state.finished or _held(state, lease):
                        return
                lease = None
                await asyncio.sleep(next(delays))
        except asyncio.CancelledError:
            if first is not None and not first.done():
                first.cancel()
            raise
        except Exception as error:  # the first attempt's: its caller gets it
            if first is not None and not first.done():
                first.set_exception(error)
            else:
                log.exception("saga driving failed", saga=saga_id)

    async def _state(self, saga_id: str) -> store.SagaState:
        state = await store.load(self.db, saga_id)
        if state is None:
            raise KeyError(f"no saga {saga_id!r}")
        return state


def _held(state: store.SagaState, lease: Lease | None) -> bool:
    """Whether another live process holds the saga (this one could not take it)."""
    return lease is None and state.lease_until is not None and state.lease_until > now()


def _delays(backoff: tuple[float, ...]) -> Iterator[float]:
    yield from backoff
    while True:
        yield backoff[-1] if backoff else 1.0


async def show(db: Database, saga_id: str) -> store.SagaState | None:
    """The recorded state of saga `saga_id` (status, error, each step), or None."""
    return await store.load(db, saga_id)
