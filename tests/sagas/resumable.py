"""A service process whose transfer sagas can stop as FAILED, for `keel saga resume` tests.

    python tests/sagas/resumable.py GEN_DIR --code fixed|renamed|raising [--start ID:TO ...]
        [--pause ID=BOUNDARY ...]

It runs `keel.saga.Recovery` over a 4-step transfer against the ledger: debit, fee (the
pivot), credit (to TO), notice. `renamed` calls the fee step "charge" (its steps no longer
match a record made by `fixed`); `raising` raises between the credit and the notice. It prints
{"event": "ready"}, launches the given sagas (1 cent from "alice" to TO), prints one JSON line
per boundary (`before:fee`, ...) and, at a saga's pause boundary, waits for a line on stdin (or
the test's SIGKILL). It runs until killed. Settings come from KEEL_*.
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
        await asyncio.to_thread(sys.stdin.readline)


def body(pb2: Any, ledger: Any, code: str) -> Any:
    async def apply(step: keel.saga.Step, account: str, amount: int) -> str:
        await boundary(step.saga_id, f"before:{step.name}")
        request = pb2.ApplyRequest(account=account, amount=amount)
        entry = await ledger.apply(request, metadata=step.metadata)
        return str(entry.id)

    async def reverse(step: keel.saga.Step, _result: str | None) -> None:
        request = pb2.ReverseRequest(original_key=step.action_key)
        await ledger.reverse(request, metadata=step.metadata)

    async def transfer(run: keel.saga.Run[dict[str, Any]]) -> None:
        data = run.data
        await run.step("debit", lambda s: apply(s, data["from"], -data["amount"]), reverse)
        fee = "charge" if code == "renamed" else "fee"
        await run.step(fee, lambda s: apply(s, "fees", 1), reverse, pivot=True)
        await run.step("credit", lambda s: apply(s, data["to"], data["amount"]))
        if code == "raising":
            raise RuntimeError("no notice template for this account")
        await run.step("notice", lambda s: apply(s, "notices", 1))

    return transfer


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("gen")
    parser.add_argument("--code", choices=("fixed", "renamed", "raising"), default="fixed")
    parser.add_argument("--start", nargs="*", default=[], help="ID:TO")
    parser.add_argument("--pause", nargs="*", default=[], help="ID=BOUNDARY")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.gen)
    pb2 = importlib.import_module("ledger.v1.ledger_pb2")
    ledger_keel = importlib.import_module("ledger.v1.ledger_keel")
    pauses.update(item.split("=", 1) for item in args.pause)
    db = Database(keel.runtime.config.current().database_url, tables=keel.saga.tables.metadata)
    async with ledger_keel.LedgerServiceClient.connect() as ledger:
        transfers = keel.saga.Saga("transfer", body(pb2, ledger, args.code), db)
        recovery = keel.saga.Recovery(transfers)
        await recovery.start()
        print(json.dumps({"event": "ready"}), flush=True)
        for item in args.start:
            saga_id, to = item.split(":", 1)
            await transfers.launch({"from": "alice", "to": to, "amount": 1}, saga_id=saga_id)
        try:
            await asyncio.Event().wait()  # until killed
        finally:
            await recovery.stop()
            await db.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
