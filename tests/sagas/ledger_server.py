"""The ledger: a Keel service whose Apply and Reverse use keel.idempotency.

`python tests/sagas/ledger_server.py GEN_DIR` serves it with `keel.serve` on KEEL_DATABASE_URL.
Every entry is a row, so an effect done twice shows as two rows with one key. Credits to an
account whose name starts with LEDGER_CLOSED (default "closed") are refused.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from typing import Any

import keel
import keel.idempotency
from keel.data import Database
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select

metadata = MetaData()
entries = Table(
    "entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(255), nullable=True),
    Column("account", String(64), nullable=False),
    Column("amount", Integer, nullable=False),
    Column("reverses", String(255), nullable=True),
)
keel.idempotency.tables.add_to(metadata)
CLOSED = os.environ.get("LEDGER_CLOSED", "closed") or "\0"
"""Accounts that refuse credits start with this ("" in the environment: none)."""


def service(pb2: Any, keel_module: Any) -> Any:
    """The Ledger servicer class over the generated modules."""

    class Ledger(keel_module.LedgerServiceBase):  # type: ignore[misc]
        def __init__(self, db: Database) -> None:
            self.db = db
            self.arrivals = 0
            self.arrived = asyncio.Event()
            """Set at each arrival (tests clear it and wait for the next)."""
            self.gate: asyncio.Event | None = None
            """When set by a test, Apply waits for it inside its transaction."""
            self.inside = asyncio.Event()

        async def _entry(self, session: Any, row: dict[str, Any]) -> Any:
            result = await session.execute(entries.insert().values(**row))
            balance = await session.scalar(
                select(func.sum(entries.c.amount)).where(entries.c.account == row["account"])
            )
            return pb2.Entry(
                id=str(result.inserted_primary_key[0]),
                account=row["account"],
                amount=row["amount"],
                balance=int(balance or 0),
            )

        async def apply(self, request: Any, context: keel.Context) -> Any:
            self.arrivals += 1
            self.arrived.set()
            async with keel.idempotency.call(self.db, context, request, pb2.Entry) as call:
                if call.replay is not None:
                    return call.replay
                if self.gate is not None:
                    self.inside.set()
                    await self.gate.wait()
                if request.account.startswith(CLOSED) and request.amount > 0:
                    raise keel.errors.FailedPrecondition(
                        f"account {request.account} is closed", reason="ACCOUNT_CLOSED"
                    )
                row = {"key": call.key, "account": request.account, "amount": request.amount}
                entry = call.respond(await self._entry(call.session, row))
            if request.lose_response:
                raise keel.errors.Unavailable("the response was lost on the way")
            return entry

        async def reverse(self, request: Any, context: keel.Context) -> Any:
            async with keel.idempotency.call(self.db, context, request, pb2.Entry) as call:
                if call.replay is not None:
                    return call.replay
                original = (
                    await call.session.execute(
                        select(entries).where(entries.c.key == request.original_key)
                    )
                ).one_or_none()
                done = await call.session.scalar(
                    select(func.count()).where(entries.c.reverses == request.original_key)
                )
                if original is None or done:
                    return call.respond(pb2.Entry())
                row = {
                    "key": call.key,
                    "account": original.account,
                    "amount": -original.amount,
                    "reverses": request.original_key,
                }
                return call.respond(await self._entry(call.session, row))

        async def note(self, request: Any, context: keel.Context) -> Any:
            self.arrivals += 1
            async with self.db.transaction() as session:
                row = {"key": None, "account": request.account, "amount": request.amount}
                entry = await self._entry(session, row)
            if request.lose_response:
                raise keel.errors.Unavailable("the response was lost on the way")
            return entry

    return Ledger


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    pb2 = importlib.import_module("ledger.v1.ledger_pb2")
    keel_module = importlib.import_module("ledger.v1.ledger_keel")
    db = Database(keel.runtime.config.current().database_url, tables=metadata)
    keel.serve([service(pb2, keel_module)(db)])


if __name__ == "__main__":
    main()
