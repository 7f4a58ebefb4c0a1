"""A service process that only recovers sagas: `keel.saga.Recovery` over a 3-step saga whose
every action adds a row to `effects` (no idempotency key: a step run twice shows twice).

    python tests/sagas/worker.py [--hold STEP] [--concurrency N]

It prints {"event": "ready"} and waits for a line on stdin before it starts recovering (so the
test can start several at once); with `--hold STEP`, that step's action prints {"held": ID}
and never returns (the test then SIGKILLs the process). Settings (the database, the lease, the
backoff) come from KEEL_*; the tables exist already (the test made them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import keel
import keel.saga
from keel.data import Database
from sqlalchemy import Column, Integer, MetaData, String, Table

NAME = "count"
STEPS = ("a", "b", "c")
metadata = MetaData()
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("saga_id", String(128), nullable=False),
    Column("step", String(16), nullable=False),
    Column("pid", Integer, nullable=False),
)
keel.saga.tables.add_to(metadata)


def body(db: Database, hold: str) -> Any:
    async def act(step: keel.saga.Step) -> int:
        if step.name == hold:
            print(json.dumps({"held": step.saga_id}), flush=True)
            await asyncio.Event().wait()  # until the test's SIGKILL
        async with db.transaction() as session:
            await session.execute(
                effects.insert().values(saga_id=step.saga_id, step=step.name, pid=os.getpid())
            )
        return os.getpid()

    async def count(run: keel.saga.Run[dict[str, Any]]) -> None:
        for name in STEPS:
            await run.step(name, act)

    return count


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hold", default="")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    db = Database(keel.runtime.config.current().database_url)
    saga = keel.saga.Saga(NAME, body(db, args.hold), db)
    recovery = keel.saga.Recovery(saga, concurrency=args.concurrency)
    print(json.dumps({"event": "ready"}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await recovery.start()
    try:
        await asyncio.Event().wait()  # until killed
    finally:
        await recovery.stop()
        await db.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
