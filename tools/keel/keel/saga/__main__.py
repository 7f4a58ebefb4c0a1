"""`keel saga show SERVICE SAGA_ID`: a saga's recorded state, from the service's database.

SERVICE is the service's folder name (its database: KEEL_DATABASE_URL, else the SQLite file in
its state dir, as `keel.data.Database.for_service` finds it). Prints the saga's status, its
first error (why it turned back or stopped) and last error (a step still failing), its lease,
then one line per step (and its failure while unresolved); `--json` prints it as one JSON
object. Exit status 1 if no saga.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any

from sqlalchemy.exc import DBAPIError

from keel.data import Database
from keel.saga.saga import show
from keel.saga.store import REFUSED, SagaState


def _text(state: SagaState) -> str:
    lines = [
        f"saga {state.id} ({state.name}): {state.status}",
        f"  first error: {state.error or '-'}",
        f"  last error: {state.last_error or '-'}",
        f"  held until: {state.lease_until.isoformat() if state.lease_until else '-'}",
        f"  created {state.created_at.isoformat()}, updated {state.updated_at.isoformat()}",
    ]
    for step in state.steps:
        refused = step.status == REFUSED
        detail = step.error if refused else json.dumps(step.result)
        lines.append(f"  {step.position + 1}. {step.name}: {step.status}  {detail}")
        if step.error and not refused:
            lines.append(f"       failing: {step.error}")
    return "\n".join(lines)


def _json(state: SagaState) -> str:
    def plain(value: Any) -> Any:
        return value.isoformat() if hasattr(value, "isoformat") else value

    found = dataclasses.asdict(state)
    found = {k: plain(v) for k, v in found.items()}
    found["last_error"] = state.last_error
    found["steps"] = [{k: plain(v) for k, v in s.items()} for s in found["steps"]]
    return json.dumps(found)


async def _show(service: str, saga_id: str, as_json: bool) -> int:
    db = Database.for_service(service)
    try:
        state = await show(db, saga_id)
    except DBAPIError as error:  # no such table, no server, ...: one line, no traceback
        reason = str(error.orig).splitlines()[0] if error.orig else type(error).__name__
        print(f"keel saga: {service}'s database: {reason}", file=sys.stderr)
        return 2
    finally:
        await db.dispose()
    if state is None:
        print(f"no saga {saga_id!r} in {service}'s database", file=sys.stderr)
        return 1
    print(_json(state) if as_json else _text(state))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keel.saga")
    commands = parser.add_subparsers(dest="command", required=True)
    shown = commands.add_parser("show", help="a saga's recorded state")
    shown.add_argument("service", help="the service's folder name (its database)")
    shown.add_argument("saga_id")
    shown.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args(argv)
    return asyncio.run(_show(args.service, args.saga_id, args.json))


if __name__ == "__main__":
    raise SystemExit(main())
