"""`keel.saga.Recovery`: the background task that finishes the sagas no process is driving."""

from __future__ import annotations

import asyncio
from typing import Any

from keel.data import Database
from keel.runtime import logs
from keel.saga import store
from keel.saga.saga import Saga

log = logs.get_logger("keel.saga")

BATCH = 100
"""How many sagas one pass lists per database (the rest wait for the next pass)."""


class Recovery:
    """A background task (`keel.serve(..., background=[keel.saga.Recovery(a, b)])`) that drives
    the unfinished sagas of `sagas` that no process holds, for the life of the process.

    At start-up and then every KEEL_SAGA_LEASE, one query per database lists the unfinished
    sagas whose lease has ended (their process died or stopped, or released them to be tried
    again); each is taken (only one process can: the lease) and driven, up to `concurrency`
    at a time. `stop()` stops those it drives and the sagas' background driving
    (`Saga.close()`): each releases its lease, for the next pass here or elsewhere.
    """

    def __init__(self, *sagas: Saga[Any], concurrency: int = 8) -> None:
        self.sagas = sagas
        self.passes = 0
        """How many passes have ended (tests wait on it)."""
        self._slots = asyncio.Semaphore(concurrency)
        self._drives: dict[str, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="keel-saga-recovery")

    async def idle(self) -> None:
        """Wait until a pass finds no saga of these names unfinished, nor any being driven."""
        if self._task is None:
            return
        waiting = asyncio.ensure_future(self._idle.wait())
        try:
            await asyncio.wait({waiting, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if self._task.done():
            await self._task  # its error, if it failed

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._drives.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for saga in self.sagas:
            await saga.close()

    async def _loop(self) -> None:
        period = min((s.settings.saga_lease for s in self.sagas), default=30.0)
        while True:
            try:
                await self._pass()
            except Exception:  # the database is away: the next pass tries again
                log.exception("saga recovery pass failed")
                self._idle.clear()
            self.passes += 1
            await asyncio.sleep(period)

    async def _pass(self) -> None:
        groups: dict[int, tuple[Database, dict[str, Saga[Any]]]] = {}
        for saga in self.sagas:
            groups.setdefault(id(saga.db), (saga.db, {}))[1][saga.name] = saga
        left = bool(self._drives)
        for db, by_name in groups.values():
            for saga_id, name in await store.claimable(db, list(by_name), BATCH):
                saga = by_name[name]
                if saga_id in self._drives or saga.driving(saga_id):
                    continue
                task = asyncio.create_task(self._drive(saga, saga_id), name=f"keel-saga-{saga_id}")
                self._drives[saga_id] = task
                task.add_done_callback(self._forget)
                left = True
            for name in by_name:
                left = left or bool(await store.unfinished(db, name))
        if left:
            self._idle.clear()
        else:
            self._idle.set()

    def _forget(self, task: asyncio.Task[None]) -> None:
        for saga_id, driving in list(self._drives.items()):
            if driving is task:
                del self._drives[saga_id]

    async def _drive(self, saga: Saga[Any], saga_id: str) -> None:
        async with self._slots:
            try:
                state = await saga.run(saga_id)
            except Exception:
                log.exception("saga recovery failed", saga=saga_id, name=saga.name)
                return
        if not state.finished and state.lease_until is None:
            log.info("saga left for the next pass", saga=saga_id, error=state.last_error)
        elif all(task is asyncio.current_task() for task in self._drives.values()):
            await self._check_idle()  # the last one driven here ended: maybe none is left

    async def _check_idle(self) -> None:
        try:
            for saga in self.sagas:
                if await store.unfinished(saga.db, saga.name):
                    return
        except Exception:  # the database: the next pass sees
            log.exception("saga recovery check failed")
            return
        self._idle.set()
