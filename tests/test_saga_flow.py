"""keel.saga in one process: forward, refusal, compensation order, retries, replay, resume."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import keel
import keel.saga
import pytest
from keel.data import Database

SETTINGS = keel.Settings(saga_backoff=(0.0, 0.0), saga_lease=30.0)


@pytest.fixture
async def db(keel_database_url: str) -> AsyncIterator[Database]:
    """The saga tables on SQLite, then on PostgreSQL."""
    database = Database(keel_database_url, tables=keel.saga.tables.metadata)
    yield database
    await database.dispose()


class Peer:
    """Records each call (name, key) and fails as told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.failures: dict[str, list[BaseException]] = {}
        self.hold: dict[str, asyncio.Event] = {}
        self.entered = asyncio.Event()

    async def do(self, step: keel.saga.Step, label: str) -> Any:
        self.calls.append((label, step.key))
        if label in self.hold:
            self.entered.set()
            await self.hold[label].wait()
        pending = self.failures.get(label)
        if pending:
            raise pending.pop(0)
        return {"label": label, "attempt": step.attempt}

    async def undo(self, step: keel.saga.Step, result: Any) -> None:
        await self.do(step, f"undo:{step.name}")


def three_steps(peer: Peer, fail_after: bool = False) -> Any:
    async def body(run: keel.saga.Run[dict[str, Any]]) -> None:
        first = await run.step("a", lambda s: peer.do(s, "a"), peer.undo)
        assert first["label"] == "a"
        await run.step("b", lambda s: peer.do(s, "b"), peer.undo)
        await run.step("c", lambda s: peer.do(s, "c"))
        if fail_after:
            raise RuntimeError(f"the body failed for {run.data['who']}")

    return body


async def test_a_saga_runs_its_steps_and_completes(db: Database) -> None:
    peer = Peer()
    saga = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    state = await saga.start({"who": "x"}, saga_id="s1")
    assert state.status == keel.saga.COMPLETED
    assert peer.calls == [("a", "s1/a"), ("b", "s1/b"), ("c", "s1/c")]
    assert [(s.name, s.status, s.result) for s in state.steps] == [
        ("a", "DONE", {"label": "a", "attempt": 0}),
        ("b", "DONE", {"label": "b", "attempt": 0}),
        ("c", "DONE", {"label": "c", "attempt": 0}),
    ]
    assert state.lease_until is None
    again = await saga.start({"who": "x"}, saga_id="s1")  # the same id: nothing runs again
    assert again.status == keel.saga.COMPLETED
    assert len(peer.calls) == 3


async def test_a_refused_step_compensates_the_steps_before_it_last_first(db: Database) -> None:
    peer = Peer()
    peer.failures["c"] = [keel.errors.FailedPrecondition("no", reason="NOPE")]
    saga = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    state = await saga.start({"who": "x"}, saga_id="s2")
    assert state.status == keel.saga.COMPENSATED
    assert [label for label, _ in peer.calls] == ["a", "b", "c", "undo:b", "undo:a"]
    assert ("undo:b", "s2/b/compensate") in peer.calls
    assert [(s.name, s.status) for s in state.steps] == [
        ("a", "COMPENSATED"),
        ("b", "COMPENSATED"),
        ("c", "REFUSED"),
    ]
    assert state.error == "c: FailedPrecondition: no"


async def test_the_body_failing_compensates_every_step(db: Database) -> None:
    peer = Peer()
    saga = keel.saga.Saga("three", three_steps(peer, fail_after=True), db, settings=SETTINGS)
    state = await saga.start({"who": "y"}, saga_id="s3")
    assert state.status == keel.saga.COMPENSATED
    assert [label for label, _ in peer.calls][3:] == ["undo:b", "undo:a"]  # c has none
    assert state.error == "c: RuntimeError: the body failed for y"


async def test_a_transient_failure_is_retried_with_the_same_key(db: Database) -> None:
    peer = Peer()
    peer.failures["b"] = [keel.errors.Unavailable("down"), keel.errors.DeadlineExceeded("slow")]
    saga = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    state = await saga.start({}, saga_id="s4")
    assert state.status == keel.saga.COMPLETED
    assert [call for call in peer.calls if call[0] == "b"] == [("b", "s4/b")] * 3
    assert state.steps[1].result == {"label": "b", "attempt": 2}


async def test_a_step_whose_outcome_stays_unknown_is_compensated_too(db: Database) -> None:
    peer = Peer()
    peer.failures["b"] = [keel.errors.Unavailable("down")] * 3
    saga = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    state = await saga.start({}, saga_id="s5")
    assert state.status == keel.saga.COMPENSATED
    assert [label for label, _ in peer.calls][-2:] == ["undo:b", "undo:a"]


async def test_a_failing_compensation_is_finished_by_a_later_resume(db: Database) -> None:
    peer = Peer()
    peer.failures["c"] = [keel.errors.NotFound("gone")]
    peer.failures["undo:a"] = [keel.errors.Internal("bug")]
    saga = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    state = await saga.start({}, saga_id="s6")
    assert state.status == keel.saga.COMPENSATING
    assert state.error == "c: NotFound: gone"  # the first failure: why it turned back
    assert state.last_error == "compensating a: Internal: bug"
    assert state.lease_until is None  # free for the next resume
    assert [(s.name, s.status, s.error) for s in state.steps] == [
        ("a", "DONE", "compensating a: Internal: bug"),
        ("b", "COMPENSATED", ""),
        ("c", "REFUSED", "c: NotFound: gone"),
    ]
    (resumed,) = await saga.resume()
    assert resumed.status == keel.saga.COMPENSATED
    assert resumed.error == "c: NotFound: gone"
    assert resumed.steps[0].error == ""  # undone at last: nothing failing any more
    assert [label for label, _ in peer.calls].count("undo:b") == 1
    assert [label for label, _ in peer.calls].count("undo:a") == 2


async def test_a_stopped_saga_resumes_where_it_was_with_the_same_key(db: Database) -> None:
    peer = Peer()
    peer.hold["b"] = asyncio.Event()
    saga = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    task = asyncio.create_task(saga.start({}, saga_id="s7"))
    await asyncio.wait_for(peer.entered.wait(), 10)
    task.cancel()  # as if the process stopped while b was in flight
    with pytest.raises(asyncio.CancelledError):
        await task
    stopped = await keel.saga.show(db, "s7")
    assert stopped is not None
    assert [(s.name, s.status) for s in stopped.steps] == [("a", "DONE"), ("b", "STARTED")]
    del peer.hold["b"]
    (resumed,) = await saga.resume()
    assert resumed.status == keel.saga.COMPLETED
    assert peer.calls == [("a", "s7/a"), ("b", "s7/b"), ("b", "s7/b"), ("c", "s7/c")]


async def test_a_saga_whose_code_changed_steps_stops_as_failed(db: Database) -> None:
    peer = Peer()
    peer.hold["b"] = asyncio.Event()
    saga = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    task = asyncio.create_task(saga.start({}, saga_id="s8"))
    await asyncio.wait_for(peer.entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def reordered(run: keel.saga.Run[Any]) -> None:
        await run.step("b", lambda s: peer.do(s, "b"))
        await run.step("a", lambda s: peer.do(s, "a"))

    changed = keel.saga.Saga("three", reordered, db, settings=SETTINGS)
    (state,) = await changed.resume()
    assert state.status == keel.saga.FAILED
    assert "step 1 of saga s8 is 'b' in the code but 'a' in its record" in state.error
    assert [label for label, _ in peer.calls] == ["a", "b"]  # nothing ran again


async def test_a_step_name_used_twice_is_refused(db: Database) -> None:
    peer = Peer()

    async def twice(run: keel.saga.Run[Any]) -> None:
        await run.step("a", lambda s: peer.do(s, "a"))
        await run.step("a", lambda s: peer.do(s, "a"))

    state = await keel.saga.Saga("twice", twice, db, settings=SETTINGS).start({}, saga_id="s9")
    assert state.status == keel.saga.FAILED
    assert "step name 'a' is used twice" in state.error


def _saga_cli(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    """`keel saga ARGUMENTS` with `env`, run to its end."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "keel"), "saga", *arguments],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


async def test_keel_saga_show_prints_a_sagas_state(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'svc.sqlite3'}"
    db = Database(url, tables=keel.saga.tables.metadata)
    peer = Peer()
    peer.failures["c"] = [keel.errors.FailedPrecondition("no stock")]
    await keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS).start({}, saga_id="s10")
    await db.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["KEEL_DATABASE_URL"] = url
    shown = await asyncio.to_thread(_saga_cli, env, "show", "svc", "s10")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "saga s10 (three): COMPENSATED"
    assert lines[1] == "  first error: c: FailedPrecondition: no stock"
    assert lines[2] == "  last error: c: FailedPrecondition: no stock"
    assert lines[5:] == [
        '  1. a: COMPENSATED  {"label": "a", "attempt": 0}',
        '  2. b: COMPENSATED  {"label": "b", "attempt": 0}',
        "  3. c: REFUSED  c: FailedPrecondition: no stock",
    ]
    missing = await asyncio.to_thread(_saga_cli, env, "show", "svc", "nope", "--json")
    assert missing.returncode == 1
    assert "no saga 'nope'" in missing.stderr
    none = await asyncio.to_thread(_saga_cli, env, "list", "svc", "--status", "FAILED")
    assert none.returncode == 0, none.stderr
    assert (none.stdout, none.stderr) == ("", "no FAILED sagas\n")
    env["KEEL_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'other.sqlite3'}"
    without = await asyncio.to_thread(_saga_cli, env, "show", "other", "s10")
    assert without.returncode == 2
    assert without.stderr == "keel saga: other's database: no such table: keel_saga\n"


def test_keel_saga_with_a_mistyped_service_says_so_and_makes_nothing(tmp_path: Path) -> None:
    (tmp_path / "services" / "orders").mkdir(parents=True)
    (tmp_path / "services" / "orders" / "pyproject.toml").write_text("[project]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    typo = subprocess.run(
        [str(Path(sys.executable).parent / "keel"), "saga", "list", "ordrs"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert typo.returncode == 2
    assert "keel saga: no database of 'ordrs' at " in typo.stderr
    assert "(services here: orders;" in typo.stderr
    assert not (tmp_path / ".keel").exists()  # no empty database left behind


async def test_recovery_resumes_until_no_saga_is_left(db: Database) -> None:
    peer = Peer()
    peer.failures["c"] = [keel.errors.NotFound("gone")]
    peer.failures["undo:a"] = [keel.errors.Internal("bug")] * 7  # start: 3, recovery: 3, then 1
    settings = keel.Settings(saga_backoff=(0.0, 0.0), saga_lease=0.05)
    saga = keel.saga.Saga("three", three_steps(peer), db, settings=settings)
    assert (await saga.start({}, saga_id="s11")).status == keel.saga.COMPENSATING
    recovery = keel.saga.Recovery(saga)
    await recovery.start()
    try:
        await asyncio.wait_for(recovery.idle(), 10)
    finally:
        await recovery.stop()
    state = await keel.saga.show(db, "s11")
    assert state is not None
    assert state.status == keel.saga.COMPENSATED
    assert [label for label, _ in peer.calls].count("undo:a") == 8  # 7 failures, then done


async def test_a_saga_held_by_a_live_process_is_not_driven_by_another(db: Database) -> None:
    peer = Peer()
    peer.hold["b"] = asyncio.Event()
    first = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    task = asyncio.create_task(first.start({}, saga_id="s12"))
    await asyncio.wait_for(peer.entered.wait(), 10)
    other = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    (seen,) = await other.resume(wait=False)  # a second process at start-up
    assert (seen.status, seen.lease_until is not None) == (keel.saga.RUNNING, True)
    assert [label for label, _ in peer.calls] == ["a", "b"]
    peer.hold["b"].set()
    assert (await task).status == keel.saga.COMPLETED
    assert [label for label, _ in peer.calls] == ["a", "b", "c"]
