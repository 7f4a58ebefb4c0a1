"""`keel saga list` and `keel saga resume` as operators run them, against real processes: a
transfer saga (tests/sagas/resumable.py, its service running `Recovery`) stops as FAILED for
each reason a saga can (its steps no longer match the code, a step after the pivot refused,
the body raising after the pivot); the cause is fixed (a new deploy, the ledger accepting);
`keel saga resume` sends it back and the running service finishes it, each effect at the ledger
once. On SQLite, then PostgreSQL (the ledger on SQLite)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import keel
import keel.saga
import pytest
from keel.data import Database

from tests.conftest import REPO
from tests.sagas.support import generated
from tests.test_saga_crash import Ledger, _env, _lines
from tests.test_saga_flow import Peer, three_steps
from tests.test_saga_recovery import until

KEEL = str(Path(sys.executable).parent / "keel")


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    running = Ledger(tmp_path)
    await running.start()
    try:
        yield running
    finally:
        await running.kill()
        await running.db.dispose()


@pytest.fixture
async def db(keel_database_url: str) -> AsyncIterator[Database]:
    """The service's database, its saga tables made."""
    database = Database(keel_database_url, tables=keel.saga.tables.metadata)
    assert await keel.saga.show(database, "none") is None  # makes the tables
    yield database
    await database.dispose()


class Service:
    """tests/sagas/resumable.py in its own process (`code`: fixed, renamed or raising)."""

    def __init__(self, url: str, target: str) -> None:
        self.url = url
        self.target = target
        self.process: asyncio.subprocess.Process | None = None
        self.lines: AsyncIterator[dict[str, Any]] | None = None
        self.drain: asyncio.Task[None] | None = None

    async def start(self, code: str, *args: str, wait_for: str = "event") -> Any:
        """Start it; the value of `wait_for` in the first line that has it. Its output is
        read on after that, so it never blocks on a full pipe."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "tests/sagas/resumable.py",
            str(generated()),
            "--code",
            code,
            *args,
            cwd=REPO,
            env=_env(
                KEEL_DATABASE_URL=self.url,
                KEEL_TARGET_LEDGER_V1_LEDGERSERVICE=self.target,
                KEEL_SAGA_LEASE="0.5",
                KEEL_SAGA_BACKOFF="0.05",
                KEEL_RETRY_MAX_ATTEMPTS="2",
            ),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        lines = _lines(self.process)
        async for line in lines:
            if wait_for in line:
                self.drain = asyncio.create_task(self._drain(lines))
                return line[wait_for]
        raise AssertionError(f"the service ended before a line with {wait_for!r}")

    @staticmethod
    async def _drain(lines: AsyncIterator[dict[str, Any]]) -> None:
        async for _ in lines:
            pass

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        if self.drain is not None:
            await asyncio.gather(self.drain, return_exceptions=True)


@pytest.fixture
async def services(
    db: Database, ledger: Ledger
) -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    started: list[Service] = []

    async def start(code: str, *args: str, wait_for: str = "event") -> Service:
        service = Service(str(db.url.render_as_string(hide_password=False)), ledger.target)
        started.append(service)
        await service.start(code, *args, wait_for=wait_for)
        return service

    yield start
    for service in started:
        await service.kill()


async def keel_saga(db: Database, *args: str) -> subprocess.CompletedProcess[str]:
    """`keel saga ARGS` as an operator runs it, on the service's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["KEEL_DATABASE_URL"] = db.url.render_as_string(hide_password=False)
    return await asyncio.to_thread(
        subprocess.run, [KEEL, "saga", *args], env=env, capture_output=True, text=True
    )


async def state(db: Database, saga_id: str) -> keel.saga.SagaState:
    found = await keel.saga.show(db, saga_id)
    assert found is not None
    return found


async def reaches(db: Database, saga_id: str, status: str, *, again: bool = False) -> None:
    """Wait until the saga is `status`; with `again`, one that a resume's note is no longer
    the latest word on (it was driven since)."""

    async def check() -> bool:
        found = await keel.saga.show(db, saga_id)  # None until the service launched it
        if found is None:
            return False
        noted = found.steps and found.steps[-1].error.startswith(keel.saga.operate.RESUMED)
        return found.status == status and not (again and noted)

    await until(check, f"saga {saga_id} {status}")


async def failed_ids(db: Database) -> list[str]:
    listed = await keel_saga(db, "list", "svc", "--status", "FAILED")
    assert listed.returncode == 0, listed.stderr
    return [line.split()[0] for line in listed.stdout.splitlines()]


async def resume(db: Database, saga_id: str) -> str:
    resumed = await keel_saga(db, "resume", "svc", saga_id)
    assert resumed.returncode == 0, resumed.stderr
    return resumed.stdout


async def effects(ledger: Ledger, saga_id: str) -> dict[str, int]:
    """The ledger's entries of the saga, by key; fails if a key has two."""
    rows = [row for row in await ledger.entries() if row.key.startswith(f"{saga_id}/")]
    keys = [row.key for row in rows]
    assert len(keys) == len(set(keys)), f"an effect happened twice: {sorted(keys)}"
    return {row.key.removeprefix(f"{saga_id}/"): row.amount for row in rows}


async def test_a_saga_stopped_by_a_code_change_resumes_after_the_fix(
    db: Database, ledger: Ledger, services: Callable[..., Awaitable[Service]]
) -> None:
    pause = ("--pause", "m1=before:fee")
    old = await services("fixed", "--start", "m1:bob", *pause, wait_for="paused")
    await old.kill()  # the fee STARTED, its outcome unknown; then a deploy renames the step
    renamed = await services("renamed")
    await reaches(db, "m1", keel.saga.FAILED)
    stopped = await state(db, "m1")
    assert stopped.stopped_from == keel.saga.RUNNING
    assert "step 2 of saga m1 is 'charge' in the code but 'fee' in its record" in stopped.error
    assert await failed_ids(db) == ["m1"]

    assert "FAILED -> RUNNING" in await resume(db, "m1")  # not fixed yet: it stops again
    await reaches(db, "m1", keel.saga.FAILED, again=True)
    assert (await state(db, "m1")).steps[1].error.startswith("step 2 of saga m1 is 'charge'")

    await renamed.kill()
    await services("fixed")  # the fix deployed
    assert await failed_ids(db) == ["m1"]  # nothing resumes a FAILED saga by itself
    await resume(db, "m1")
    await reaches(db, "m1", keel.saga.COMPLETED)
    done = await state(db, "m1")
    assert [(s.name, s.status) for s in done.steps] == [
        ("debit", "DONE"),
        ("fee", "DONE"),
        ("credit", "DONE"),
        ("notice", "DONE"),
    ]
    assert done.error == stopped.error  # the first error stays
    assert await failed_ids(db) == []
    assert await effects(ledger, "m1") == {"debit": -1, "fee": 1, "credit": 1, "notice": 1}


async def test_a_step_refused_after_the_pivot_is_called_again_under_a_new_key(
    db: Database, ledger: Ledger, services: Callable[..., Awaitable[Service]]
) -> None:
    await services("fixed", "--start", "r1:closed-bob")
    await reaches(db, "r1", keel.saga.FAILED)
    stopped = await state(db, "r1")
    assert stopped.stopped_from == keel.saga.FORWARD
    assert stopped.error == "credit: FailedPrecondition: account closed-bob is closed"
    assert [(s.name, s.status, s.retried) for s in stopped.steps][2] == ("credit", "REFUSED", 0)

    assert "FAILED -> FORWARD" in await resume(db, "r1")  # still closed: refused again
    await reaches(db, "r1", keel.saga.FAILED, again=True)
    again = await state(db, "r1")
    assert (again.steps[2].status, again.steps[2].retried) == ("REFUSED", 1)
    assert again.error == stopped.error

    await ledger.kill()
    await ledger.start(LEDGER_CLOSED="")  # the account reopened
    await resume(db, "r1")
    await reaches(db, "r1", keel.saga.COMPLETED)
    done = await state(db, "r1")
    assert [(s.status, s.retried) for s in done.steps] == [
        ("DONE", 0),
        ("DONE", 0),
        ("DONE", 2),
        ("DONE", 0),
    ]
    assert await effects(ledger, "r1") == {
        "debit": -1,
        "fee": 1,
        "credit/retry-2": 1,  # the keys r1/credit and r1/credit/retry-1 hold refusals
        "notice": 1,
    }

    refused = await keel_saga(db, "resume", "svc", "r1")
    assert refused.returncode == 1
    assert refused.stderr == (
        "keel saga resume: saga r1 is COMPLETED, not FAILED in svc's database\n"
    )
    unknown = await keel_saga(db, "resume", "svc", "nope")
    assert (unknown.returncode, unknown.stderr) == (
        1,
        "keel saga resume: no saga 'nope' in svc's database\n",
    )


async def test_a_saga_whose_body_raised_after_the_pivot_resumes_after_the_fix(
    db: Database, ledger: Ledger, services: Callable[..., Awaitable[Service]]
) -> None:
    raising = await services("raising", "--start", "b1:bob", "b2:carol")
    await reaches(db, "b1", keel.saga.FAILED)
    await reaches(db, "b2", keel.saga.FAILED)
    stopped = await state(db, "b1")
    assert stopped.stopped_from == keel.saga.FORWARD
    assert stopped.error == "credit: RuntimeError: no notice template for this account"
    assert sorted(await failed_ids(db)) == ["b1", "b2"]
    await raising.kill()
    await services("fixed")
    await resume(db, "b1")
    await reaches(db, "b1", keel.saga.COMPLETED)
    assert await failed_ids(db) == ["b2"]  # the one not resumed stays
    assert await effects(ledger, "b1") == {"debit": -1, "fee": 1, "credit": 1, "notice": 1}
    listed = await keel_saga(db, "list", "svc", "--limit", "1", "--json")
    assert [(s["id"], s["status"]) for s in json.loads(listed.stdout)] == [("b1", "COMPLETED")]


async def test_a_saga_that_failed_while_compensating_resumes_compensating(
    db: Database,
) -> None:
    settings = keel.Settings(saga_backoff=(0.0, 0.0), saga_lease=30.0)
    peer = Peer()
    peer.failures["c"] = [keel.errors.NotFound("gone")]
    peer.failures["undo:b"] = [keel.errors.Internal("bug")]
    saga = keel.saga.Saga("three", three_steps(peer), db, settings=settings)
    assert (await saga.start({}, saga_id="c1")).status == keel.saga.COMPENSATING

    async def renamed(run: keel.saga.Run[Any]) -> None:
        await run.step("debit", lambda s: peer.do(s, "a"), peer.undo)

    (failed,) = await keel.saga.Saga("three", renamed, db, settings=settings).resume()
    assert (failed.status, failed.stopped_from) == (keel.saga.FAILED, keel.saga.COMPENSATING)
    results = await asyncio.gather(
        keel.saga.reopen(db, "c1"), keel.saga.reopen(db, "c1"), return_exceptions=True
    )  # two operators at once: one wins
    assert sorted(map(str, results)) == [
        "COMPENSATING",
        "saga c1 is COMPENSATING, not FAILED",
    ] or sorted(map(str, results)) == [
        "COMPENSATING",
        "saga c1 is no longer FAILED (resumed meanwhile?)",
    ]
    (resumed,) = await saga.resume()  # the fixed code: b and a undone, c never called again
    assert resumed.status == keel.saga.COMPENSATED
    assert resumed.error == "c: NotFound: gone"
    assert [label for label, _ in peer.calls] == ["a", "b", "c", "undo:b", "undo:b", "undo:a"]
