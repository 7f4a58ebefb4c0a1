"""Recovery for the life of the process, in real processes on one database (SQLite, then
PostgreSQL): two processes recovering the same sagas at once drive each step once; a process
SIGKILLed while it drives sagas has them finished by another that was already running (no
restart), once their leases end, and not before."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import keel.saga
import pytest
from keel.data import Database
from keel.saga import store
from sqlalchemy import select

from tests.conftest import REPO
from tests.sagas import worker

LEASE = 1.5
DEADLINE = 60.0


@pytest.fixture
async def db(keel_database_url: str) -> AsyncIterator[Database]:
    """The saga tables and `effects`, with 8 sagas no process holds."""
    database = Database(keel_database_url, tables=worker.metadata)
    for number in range(8):
        lease = await store.create(database, f"s{number}", worker.NAME, {}, LEASE)
        assert lease is not None
        await store.release(lease)
    yield database
    await database.dispose()


class Worker:
    """tests/sagas/worker.py in its own process."""

    def __init__(self, url: str, *args: str) -> None:
        self.url = url
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "tests/sagas/worker.py",
            *self.args,
            cwd=REPO,
            env={
                **clean,
                "KEEL_DATABASE_URL": self.url,
                "KEEL_SAGA_LEASE": str(LEASE),
                "KEEL_SAGA_BACKOFF": "0.05",
                "KEEL_LOG_FORMAT": "json",
            },
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        await self.line("event")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def line(self, key: str) -> Any:
        """The value of `key` in the next JSON line that has it."""
        assert self.process is not None
        assert self.process.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.process.stdout.readline(), DEADLINE)
            assert raw, "the worker ended"
            try:
                parsed = json.loads(raw)
            except ValueError:
                continue
            if isinstance(parsed, dict) and key in parsed:
                return parsed[key]

    def go(self) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()


@pytest.fixture
async def workers(keel_database_url: str) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    started: list[Worker] = []

    async def start(*args: str) -> Worker:
        running = Worker(keel_database_url, *args)
        started.append(running)
        await running.start()
        return running

    yield start
    for running in started:
        await running.kill()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until `check()` holds (a row the test waits for), failing after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert time.monotonic() < deadline, f"still not {what} after {DEADLINE} s"
        await asyncio.sleep(0.05)


async def sagas(db: Database) -> dict[str, store.SagaState]:
    found = {}
    for number in range(8):
        state = await keel.saga.show(db, f"s{number}")
        assert state is not None
        found[state.id] = state
    return found


async def effects(db: Database) -> list[Any]:
    async with db.transaction(readonly=True) as session:
        return list((await session.execute(select(worker.effects))).all())


def each_once(rows: list[Any]) -> dict[tuple[str, str], int]:
    """The pid that did each (saga, step); asserts none was done twice."""
    counted = collections.Counter((row.saga_id, row.step) for row in rows)
    assert [key for key, times in counted.items() if times > 1] == []
    return {(row.saga_id, row.step): row.pid for row in rows}


async def test_two_processes_recovering_the_same_sagas_drive_each_step_once(
    db: Database, workers: Callable[..., Awaitable[Worker]]
) -> None:
    first, second = await asyncio.gather(workers(), workers())
    first.go()
    second.go()  # both list the same 8 sagas and race to take them

    async def all_completed() -> bool:
        return all(s.status == keel.saga.COMPLETED for s in (await sagas(db)).values())

    await until(all_completed, "every saga COMPLETED")
    done = each_once(await effects(db))
    assert sorted(done) == [(f"s{n}", step) for n in range(8) for step in worker.STEPS]
    assert set(done.values()) <= {first.pid, second.pid}
    for state in (await sagas(db)).values():  # what each step recorded is what it did
        assert [s.result for s in state.steps] == [done[state.id, s] for s in worker.STEPS]
        assert len({s.result for s in state.steps}) == 1  # one process drove it


async def test_sagas_of_a_killed_process_are_finished_by_a_live_one(
    db: Database, workers: Callable[..., Awaitable[Worker]]
) -> None:
    doomed = await workers("--hold", "b", "--concurrency", "4")
    doomed.go()
    held = {await doomed.line("held") for _ in range(4)}  # 4 held at b, 4 waiting for a slot
    live = await workers("--concurrency", "4")
    live.go()
    rest = {f"s{n}" for n in range(8)} - held

    async def rest_completed() -> bool:
        found = await sagas(db)
        return all(found[saga_id].status == keel.saga.COMPLETED for saga_id in rest)

    await until(rest_completed, "the sagas no one held COMPLETED")
    leases = {saga_id: (await sagas(db))[saga_id].lease_until for saga_id in held}

    async def renewed() -> bool:
        found = await sagas(db)
        return all(_later(found[saga_id].lease_until, leases[saga_id]) for saga_id in held)

    await until(renewed, "the held sagas' leases renewed")  # the doomed process holds them
    done = each_once(await effects(db))
    assert {key: pid for key, pid in done.items() if key[0] in held} == {
        (saga_id, "a"): doomed.pid for saga_id in held
    }
    assert {pid for key, pid in done.items() if key[0] in rest} == {live.pid}

    await doomed.kill()  # the live process takes its sagas once their leases end

    async def all_completed() -> bool:
        return all(s.status == keel.saga.COMPLETED for s in (await sagas(db)).values())

    await until(all_completed, "every saga COMPLETED")
    done = each_once(await effects(db))
    assert len(done) == 8 * 3
    for saga_id in held:
        assert [done[saga_id, step] for step in worker.STEPS] == [doomed.pid, live.pid, live.pid]


def _later(moment: Any, than: Any) -> bool:
    return moment is not None and than is not None and moment > than
