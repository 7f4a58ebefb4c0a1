"""keel.saga's rules on SQLite and PostgreSQL: pivot steps (forward only after them), the first
error kept while later ones are recorded per step, the step order guard on replay, and a
process that lost its saga's lease stopping."""

from __future__ import annotations

import asyncio
import datetime
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

from tests.test_saga_flow import Peer, three_steps

SETTINGS = keel.Settings(saga_backoff=(0.0, 0.0), saga_lease=30.0)


@pytest.fixture
async def db(keel_database_url: str) -> AsyncIterator[Database]:
    database = Database(keel_database_url, tables=keel.saga.tables.metadata)
    yield database
    await database.dispose()


def with_pivot(peer: Peer, *, check: bool = False) -> Any:
    """reserve → capture (the pivot) → ship → notify; with `check`, the body turns back on
    the capture's result before going on."""

    async def body(run: keel.saga.Run[dict[str, Any]]) -> None:
        await run.step("reserve", lambda s: peer.do(s, "reserve"), peer.undo)
        captured = await run.step("capture", lambda s: peer.do(s, "capture"), peer.undo, pivot=True)
        if check and captured["attempt"] == 0:
            raise RuntimeError("the capture came back declined")
        await run.step("ship", lambda s: peer.do(s, "ship"), peer.undo)
        await run.step("notify", lambda s: peer.do(s, "notify"))

    return body


def labels(peer: Peer) -> list[str]:
    return [label for label, _ in peer.calls]


async def test_after_the_pivot_a_failing_step_is_retried_never_compensated(db: Database) -> None:
    peer = Peer()
    peer.failures["ship"] = [keel.errors.Unavailable("the carrier is down")] * 5
    saga = keel.saga.Saga("pivot", with_pivot(peer), db, settings=SETTINGS)
    state = await saga.start({}, saga_id="p1")
    assert state.status == keel.saga.FORWARD  # recorded: past the point of no return
    assert state.lease_until is None  # released for the next pass
    assert state.error == ""  # nothing turned it back
    assert [(s.name, s.status) for s in state.steps] == [
        ("reserve", "DONE"),
        ("capture", "DONE"),
        ("ship", "STARTED"),
    ]
    assert state.steps[2].error == "ship: Unavailable: the carrier is down"
    assert state.last_error == state.steps[2].error
    assert not [label for label in labels(peer) if label.startswith("undo:")]
    (resumed,) = await saga.resume()  # 2 more failures, then it goes through
    assert resumed.status == keel.saga.COMPLETED
    assert labels(peer) == ["reserve", "capture", *["ship"] * 6, "notify"]
    assert {key for label, key in peer.calls if label == "ship"} == {"p1/ship"}
    assert resumed.steps[2].error == ""


async def test_a_step_refused_after_the_pivot_stops_the_saga_for_a_person(db: Database) -> None:
    peer = Peer()
    peer.failures["ship"] = [keel.errors.FailedPrecondition("no such address")]
    saga = keel.saga.Saga("pivot", with_pivot(peer), db, settings=SETTINGS)
    state = await saga.start({}, saga_id="p2")
    assert state.status == keel.saga.FAILED
    assert state.error == "ship: FailedPrecondition: no such address"
    assert state.steps[2].status == "REFUSED"
    assert labels(peer) == ["reserve", "capture", "ship"]  # nothing undone


async def test_the_pivot_refused_compensates_the_steps_before_it(db: Database) -> None:
    peer = Peer()
    peer.failures["capture"] = [keel.errors.FailedPrecondition("declined")]
    saga = keel.saga.Saga("pivot", with_pivot(peer), db, settings=SETTINGS)
    state = await saga.start({}, saga_id="p3")
    assert state.status == keel.saga.COMPENSATED
    assert labels(peer) == ["reserve", "capture", "undo:reserve"]


async def test_the_body_may_turn_back_on_the_pivots_result_before_going_on(db: Database) -> None:
    peer = Peer()
    saga = keel.saga.Saga("pivot", with_pivot(peer, check=True), db, settings=SETTINGS)
    state = await saga.start({}, saga_id="p4")
    assert state.status == keel.saga.COMPENSATED
    assert state.error == "capture: RuntimeError: the capture came back declined"
    assert labels(peer) == ["reserve", "capture", "undo:capture", "undo:reserve"]


async def test_a_replayed_pivot_keeps_the_saga_forward(db: Database) -> None:
    peer = Peer()
    peer.hold["notify"] = asyncio.Event()
    peer.failures["notify"] = [keel.errors.Internal("bug")]  # a restarted process: no longer
    saga = keel.saga.Saga("pivot", with_pivot(peer), db, settings=SETTINGS)
    task = asyncio.create_task(saga.start({}, saga_id="p5"))
    await asyncio.wait_for(peer.entered.wait(), 10)
    task.cancel()  # stopped while notify was in flight
    with pytest.raises(asyncio.CancelledError):
        await task
    stopped = await keel.saga.show(db, "p5")
    assert stopped is not None
    assert stopped.status == keel.saga.FORWARD
    del peer.hold["notify"]
    (state,) = await saga.resume()  # notify fails (Internal) → retried later, not undone
    assert state.status == keel.saga.FORWARD
    assert state.last_error == "notify: Internal: bug"
    (state,) = await saga.resume()
    assert state.status == keel.saga.COMPLETED
    assert not [label for label in labels(peer) if label.startswith("undo:")]


async def test_a_resumed_saga_whose_code_ends_early_is_refused(db: Database) -> None:
    peer = Peer()
    peer.hold["c"] = asyncio.Event()
    saga = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    task = asyncio.create_task(saga.start({}, saga_id="o1"))
    await asyncio.wait_for(peer.entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def shorter(run: keel.saga.Run[Any]) -> None:
        await run.step("a", lambda s: peer.do(s, "a"), peer.undo)
        await run.step("b", lambda s: peer.do(s, "b"), peer.undo)

    (state,) = await keel.saga.Saga("three", shorter, db, settings=SETTINGS).resume()
    assert state.status == keel.saga.FAILED
    assert state.error.startswith(
        "saga o1 ends after 2 step(s) in the code but its record has step 3 'c' "
        "(recorded: 1. a DONE, 2. b DONE, 3. c STARTED): the code's steps changed"
    )
    assert state.steps[2].error == state.error
    assert labels(peer) == ["a", "b", "c"]  # nothing called again, nothing undone


async def test_a_mismatch_while_compensating_keeps_the_first_error(db: Database) -> None:
    peer = Peer()
    peer.failures["c"] = [keel.errors.NotFound("gone")]
    peer.failures["undo:a"] = [keel.errors.Internal("bug")] * 3
    saga = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    assert (await saga.start({}, saga_id="o2")).status == keel.saga.COMPENSATING

    async def renamed(run: keel.saga.Run[Any]) -> None:
        await run.step("debit", lambda s: peer.do(s, "a"), peer.undo)

    (state,) = await keel.saga.Saga("three", renamed, db, settings=SETTINGS).resume()
    assert state.status == keel.saga.FAILED
    assert state.error == "c: NotFound: gone"
    mismatch = "step 1 of saga o2 is 'debit' in the code but 'a' in its record"
    assert state.last_error.startswith(mismatch)
    assert "(recorded: 1. a DONE, 2. b COMPENSATED, 3. c REFUSED)" in state.last_error


async def test_keel_saga_show_prints_the_first_and_the_last_error(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'svc.sqlite3'}"
    db = Database(url, tables=keel.saga.tables.metadata)
    peer = Peer()
    peer.failures["c"] = [keel.errors.FailedPrecondition("no stock")]
    peer.failures["undo:a"] = [keel.errors.Unavailable("down")] * 3
    await keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS).start({}, saga_id="v1")
    await db.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["KEEL_DATABASE_URL"] = url
    shown = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "keel"), "saga", "show", "svc", "v1"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = shown.stdout.splitlines()
    assert lines[:3] == [
        "saga v1 (three): COMPENSATING",
        "  first error: c: FailedPrecondition: no stock",
        "  last error: compensating a: Unavailable: down",
    ]
    assert lines[5:] == [
        '  1. a: DONE  {"label": "a", "attempt": 0}',
        "       failing: compensating a: Unavailable: down",
        '  2. b: COMPENSATED  {"label": "b", "attempt": 0}',
        "  3. c: REFUSED  c: FailedPrecondition: no stock",
    ]


async def test_a_process_that_lost_its_lease_stops_driving(db: Database) -> None:
    """A process stalls past its lease and another takes the saga: the first finds out at its
    next renewal and stops (its step in flight cancelled), so the steps after run once."""
    settings = keel.Settings(saga_backoff=(0.0, 0.0), saga_lease=0.6)
    stalled, other = Peer(), Peer()
    stalled.hold["b"] = asyncio.Event()  # never set: the stalled process's call hangs
    first = keel.saga.Saga("three", three_steps(stalled), db, settings=settings)
    task = asyncio.create_task(first.start({}, saga_id="l1"))
    await asyncio.wait_for(stalled.entered.wait(), 10)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    async with db.transaction() as session:  # as if it had not renewed its lease in time
        table = keel.saga.tables.saga
        await session.execute(table.update().where(table.c.id == "l1").values(lease_until=past))
    second = keel.saga.Saga("three", three_steps(other), db, settings=settings)
    taken = await second.run("l1")
    assert taken.status == keel.saga.COMPLETED
    assert labels(other) == ["b", "c"]  # a was done; b again, with its key
    await asyncio.wait_for(task, 10)  # the first stopped on its own (its b cancelled)
    assert labels(stalled) == ["a", "b"]  # and called nothing after it lost the saga
