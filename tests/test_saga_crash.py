"""The saga proof in real processes: a 3-step transfer saga (tests/sagas/transfer.py) against a
real peer (the ledger, tests/sagas/ledger_server.py), its process SIGKILLed at every step
boundary and restarted; every saga ends COMPLETED or COMPENSATED and the peer saw each effect
once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import keel.saga
import pytest
from keel.data import Database
from sqlalchemy import select

from tests.conftest import REPO, free_port
from tests.sagas import ledger_server
from tests.sagas.support import generated

FORWARD = ["before:debit", "after:debit", "before:fee", "after:fee", "before:credit"]
COMPLETING = [*FORWARD, "after:credit"]
COMPENSATING = [
    *FORWARD,
    "after:credit",  # the credit was refused (a closed account)
    "before:undo:fee",
    "after:undo:fee",
    "before:undo:debit",
    "after:undo:debit",
]
DEADLINE = 60.0


def _env(**settings: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
    base = {"KEEL_HOST": "127.0.0.1", "KEEL_METRICS_PORT": "0", "KEEL_LOG_FORMAT": "json"}
    return {**clean, **base, **settings}


async def _lines(process: asyncio.subprocess.Process) -> AsyncIterator[dict[str, Any]]:
    """The JSON lines `process` prints (others skipped), until it closes stdout."""
    assert process.stdout is not None
    while True:
        line = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
        if not line:
            return
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            yield parsed


class Ledger:
    """The ledger in its own process, on a fixed port so that it can be restarted there."""

    def __init__(self, folder: Path) -> None:
        self.url = f"sqlite+aiosqlite:///{folder / 'ledger.sqlite3'}"
        self.target = f"127.0.0.1:{free_port()}"
        self.db = Database(self.url, tables=ledger_server.metadata)
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, **env: str) -> None:
        """Start it (`env`: more settings, e.g. LEDGER_CLOSED)."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "tests/sagas/ledger_server.py",
            str(generated()),
            cwd=REPO,
            env=_env(KEEL_PORT=self.target.rsplit(":", 1)[1], KEEL_DATABASE_URL=self.url, **env),
            stdout=asyncio.subprocess.PIPE,
        )
        async for line in _lines(self.process):
            if line.get("event") == "serving":
                return
        raise AssertionError("the ledger did not start")

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def entries(self) -> list[Any]:
        async with self.db.transaction(readonly=True) as session:
            return list((await session.execute(select(ledger_server.entries))).all())


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    running = Ledger(tmp_path)
    await running.start()
    try:
        yield running
    finally:
        await running.kill()
        await running.db.dispose()


async def _transfers(
    target: str, url: str, *args: str
) -> tuple[asyncio.subprocess.Process, AsyncIterator[dict[str, Any]]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "tests/sagas/transfer.py",
        str(generated()),
        *args,
        cwd=REPO,
        env=_env(
            KEEL_DATABASE_URL=url,
            KEEL_TARGET_LEDGER_V1_LEDGERSERVICE=target,
            KEEL_SAGA_LEASE="0.5",
            KEEL_SAGA_BACKOFF="0.1,0.5",
            KEEL_RETRY_MAX_ATTEMPTS="2",
        ),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    return process, _lines(process)


async def test_sagas_killed_at_every_step_boundary_finish_after_a_restart(
    ledger: Ledger, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'transfers.sqlite3'}"
    plans = {f"ok-{i}": ("bob", at) for i, at in enumerate(COMPLETING)}
    plans |= {f"no-{i}": ("closed", at) for i, at in enumerate(COMPENSATING)}
    starts = [f"{saga_id}:{to}" for saga_id, (to, _) in plans.items()]
    pauses = [f"{saga_id}={at}" for saga_id, (_, at) in plans.items()]

    process, lines = await _transfers(ledger.target, url, "--start", *starts, "--pause", *pauses)
    paused: dict[str, str] = {}
    async for line in lines:
        if "paused" in line:
            paused[line["saga"]] = line["paused"]
            if len(paused) == len(plans):
                break
    assert paused == {saga_id: at for saga_id, (_, at) in plans.items()}
    process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL

    restarted, lines = await _transfers(ledger.target, url)
    ended = {line["saga"]: line["status"] async for line in lines if "status" in line}
    assert await restarted.wait() == 0
    expected = {s: "COMPLETED" if s.startswith("ok") else "COMPENSATED" for s in plans}
    assert ended == expected

    saga_db = Database(url, tables=keel.saga.tables.metadata)
    try:
        for saga_id in plans:
            state = await keel.saga.show(saga_db, saga_id)
            assert state is not None
            assert state.status == expected[saga_id]
            steps = [(s.name, s.status) for s in state.steps]
            if saga_id.startswith("ok"):
                assert steps == [("debit", "DONE"), ("fee", "DONE"), ("credit", "DONE")]
            else:
                assert steps == [
                    ("debit", "COMPENSATED"),
                    ("fee", "COMPENSATED"),
                    ("credit", "REFUSED"),
                ]
                assert "ACCOUNT_CLOSED" in state.error or "closed" in state.error
    finally:
        await saga_db.dispose()

    rows = await ledger.entries()
    by_key: dict[str, list[Any]] = {}
    for row in rows:
        by_key.setdefault(row.key, []).append(row)
    assert all(len(found) == 1 for found in by_key.values()), "an effect happened twice"
    balances: dict[str, int] = {}
    for row in rows:
        balances[row.account] = balances.get(row.account, 0) + row.amount
    done = len(COMPLETING)
    assert balances == {"alice": -done, "fees": done, "bob": done}  # whatever the keys
    for saga_id in plans:
        mine = {key: found[0] for key, found in by_key.items() if key.startswith(f"{saga_id}/")}
        amounts = {key.removeprefix(f"{saga_id}/"): row.amount for key, row in mine.items()}
        if saga_id.startswith("ok"):
            assert amounts == {"debit": -1, "fee": 1, "credit": 1}
        else:
            assert amounts == {
                "debit": -1,
                "fee": 1,
                "debit/compensate": 1,
                "fee/compensate": -1,
            }


async def test_a_saga_whose_peer_goes_away_compensates_once_it_is_back(
    ledger: Ledger, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'transfers.sqlite3'}"
    process, lines = await _transfers(
        ledger.target, url, "--start", "away:bob", "--pause", "away=before:fee"
    )
    async for line in lines:
        if "paused" in line:
            break
    await ledger.kill()  # the debit is done; the ledger is gone before the fee
    assert process.stdin is not None
    process.stdin.write(b"go\n")
    await process.stdin.drain()
    ended = {line["saga"]: line["status"] async for line in lines if "status" in line}
    assert await process.wait() == 0
    assert ended == {"away": "COMPENSATING"}  # the fee failed, and so did undoing it

    saga_db = Database(url, tables=keel.saga.tables.metadata)
    try:
        state = await keel.saga.show(saga_db, "away")
        assert state is not None
        assert [(s.name, s.status) for s in state.steps] == [("debit", "DONE"), ("fee", "STARTED")]
        assert state.error.startswith("fee: Unavailable")  # why it turned back, kept
        assert state.steps[1].error.startswith("compensating fee: Unavailable")
        assert state.last_error == state.steps[1].error

        await ledger.start()  # back
        restarted, lines = await _transfers(ledger.target, url)
        ended = {line["saga"]: line["status"] async for line in lines if "status" in line}
        assert await restarted.wait() == 0
        assert ended == {"away": "COMPENSATED"}
        state = await keel.saga.show(saga_db, "away")
        assert state is not None
        assert [(s.name, s.status) for s in state.steps] == [
            ("debit", "COMPENSATED"),
            ("fee", "COMPENSATED"),  # its outcome was unknown: undone, with nothing to undo
        ]
    finally:
        await saga_db.dispose()
    amounts = sorted((row.key, row.amount) for row in await ledger.entries())
    assert amounts == [("away/debit", -1), ("away/debit/compensate", 1)]
