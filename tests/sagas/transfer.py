"""The saga process of the crash test: transfers between ledger accounts as 3-step sagas.

    python tests/sagas/transfer.py GEN_DIR [--start ID:TO ...] [--pause ID=BOUNDARY ...]

Resumes every unfinished transfer first, then starts the given ones (1 cent from "alice" to TO,
with a 1-cent fee). It prints one JSON line per boundary it passes (`before:debit`,
`after:debit`, ... `before:undo:fee`, ...) and, at a saga's pause boundary, `paused`; it then
waits for a line on stdin (or the test's SIGKILL), once. Settings (the saga's database, the
ledger's target, the lease) come from KEEL_*.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from typing import Any

import keel
import keel.saga
from keel.data import Database

pauses: dict[str, str] = {}


async def boundary(saga_id: str, label: str) -> None:
    print(json.dumps({"saga": saga_id, "at": label}), flush=True)
    if pauses.get(saga_id) == label:
        del pauses[saga_id]
        print(json.dumps({"saga": saga_id, "paused": label}), flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # a line from the test, or its SIGKILL


def body(pb2: Any, ledger: Any) -> Any:
    async def apply(step: keel.saga.Step, account: str, amount: int) -> str:
        await boundary(step.saga_id, f"before:{step.name}")
        try:
            entry = await ledger.apply(
                pb2.ApplyRequest(account=account, amount=amount), metadata=step.metadata
            )
        finally:
            await boundary(step.saga_id, f"after:{step.name}")
        return str(entry.id)

    async def reverse(step: keel.saga.Step, _result: str | None) -> None:
        await boundary(step.saga_id, f"before:undo:{step.name}")
        request = pb2.ReverseRequest(original_key=step.action_key)
        await ledger.reverse(request, metadata=step.metadata)
        await boundary(step.saga_id, f"after:undo:{step.name}")

    async def transfer(run: keel.saga.Run[dict[str, Any]]) -> None:
        data = run.data
        await run.step("debit", lambda s: apply(s, data["from"], -data["amount"]), reverse)
        await run.step("fee", lambda s: apply(s, "fees", 1), reverse)
        await run.step("credit", lambda s: apply(s, data["to"], data["amount"]), reverse)

    return transfer


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("gen")
    parser.add_argument("--start", nargs="*", default=[], help="ID:TO")
    parser.add_argument("--pause", nargs="*", default=[], help="ID=BOUNDARY")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.gen)
    pb2 = importlib.import_module("ledger.v1.ledger_pb2")
    ledger_keel = importlib.import_module("ledger.v1.ledger_keel")
    starts = [item.split(":", 1) for item in args.start]
    pauses.update(item.split("=", 1) for item in args.pause)
    db = Database(keel.runtime.config.current().database_url, tables=keel.saga.tables.metadata)
    async with ledger_keel.LedgerServiceClient.connect() as ledger:
        transfers = keel.saga.Saga("transfer", body(pb2, ledger), db)
        resumed = await transfers.resume()
        started = await asyncio.gather(
            *(
                transfers.start({"from": "alice", "to": to, "amount": 1}, saga_id=saga_id)
                for saga_id, to in starts
            )
        )
    for state in [*resumed, *started]:
        print(json.dumps({"saga": state.id, "status": state.status}), flush=True)
    print(json.dumps({"event": "finished"}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
