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

from tests.conftest import REPO
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


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[tuple[str, Database]]:
    """The ledger in its own process: its address and its database."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite3'}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "tests/sagas/ledger_server.py",
        str(generated()),
        cwd=REPO,
        env=_env(KEEL_PORT="0", KEEL_DATABASE_URL=url),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        async for line in _lines(process):
            if line.get("event") == "serving":
                port = line["port"]
                break
        else:
            raise AssertionError("the ledger did not start")
        db = Database(url, tables=ledger_server.metadata)
        yield f"127.0.0.1:{port}", db
        await db.dispose()
    finally:
        process.terminate()
        await process.wait()


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
        ),
        stdout=asyncio.subprocess.PIPE,
    )
    return process, _lines(process)


async def test_sagas_killed_at_every_step_boundary_finish_after_a_restart(
    ledger: tuple[str, Database], tmp_path: Path
) -> None:
    target, ledger_db = ledger
    url = f"sqlite+aiosqlite:///{tmp_path / 'transfers.sqlite3'}"
    plans = {f"ok-{i}": ("bob", at) for i, at in enumerate(COMPLETING)}
    plans |= {f"no-{i}": ("closed", at) for i, at in enumerate(COMPENSATING)}
    starts = [f"{saga_id}:{to}" for saga_id, (to, _) in plans.items()]
    pauses = [f"{saga_id}={at}" for saga_id, (_, at) in plans.items()]

    process, lines = await _transfers(target, url, "--start", *starts, "--pause", *pauses)
    paused: dict[str, str] = {}
    async for line in lines:
        if "paused" in line:
            paused[line["saga"]] = line["paused"]
            if len(paused) == len(plans):
                break
    assert paused == {saga_id: at for saga_id, (_, at) in plans.items()}
    process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL

    restarted, lines = await _transfers(target, url)
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

    entries = ledger_server.entries
    async with ledger_db.transaction(readonly=True) as session:
        rows = (await session.execute(select(entries))).all()
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
