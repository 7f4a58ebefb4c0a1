"""`keel saga show|list|resume SERVICE ...`: a service's sagas, from its database.

SERVICE is the service's folder name (its database: KEEL_DATABASE_URL, else the SQLite file in
its state dir, as `keel.data.Database.for_service` finds it).

- `show SERVICE ID`: the saga's status, its first error (why it turned back or stopped) and
  last error (a step still failing), its lease, then one line per step (and its failure while
  unresolved). Exit status 1 if no saga.
- `list SERVICE [--status S]... [--limit N]`: the sagas last updated first, one line each (id,
  name, status, updated, first error).
- `resume SERVICE ID`: a FAILED saga back to the status it stopped in, for the service's
  running recovery to drive (keel.saga.reopen). Exit status 1, with the reason, if it is
  unknown or not FAILED.

`--json` prints JSON instead (an object; a list for `list`). Exit status 2 if the database
cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from keel.data import Database
from keel.data.database import database_file
from keel.runtime import config
from keel.saga import operate
from keel.saga.saga import show
from keel.saga.store import (
    COMPENSATED,
    COMPENSATING,
    COMPLETED,
    FAILED,
    FORWARD,
    REFUSED,
    RUNNING,
    SagaState,
)

STATUSES = (RUNNING, FORWARD, COMPENSATING, COMPLETED, COMPENSATED, FAILED)


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
            label = "note" if step.error.startswith(operate.RESUMED) else "failing"
            lines.append(f"       {label}: {step.error}")
    return "\n".join(lines)


def plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _json(state: SagaState) -> str:
    found = dataclasses.asdict(state)
    found = {k: plain(v) for k, v in found.items()}
    found["last_error"] = state.last_error
    found["steps"] = [{k: plain(v) for k, v in s.items()} for s in found["steps"]]
    return json.dumps(found)


async def _on(service: str, work: Callable[[Database], Awaitable[int]]) -> int:
    """`work(db)` on the service's database; 2 with one line if the database cannot be read."""
    settings = config.current()
    where = database_file(service, settings)
    if not settings.database_url and not where.is_file():
        # (opening it would make an empty one: a typo or the wrong folder, most likely)
        known = sorted(p.parent.name for p in Path("services").glob("*/pyproject.toml"))
        print(
            f"keel saga: no database of {service!r} at {where} (services here:"
            f" {', '.join(known) or 'none: run it from the repository root'}; a service's"
            " database is made when it first runs)",
            file=sys.stderr,
        )
        return 2
    db = Database.for_service(service)
    try:
        return await work(db)
    except DBAPIError as error:  # no such table, no server, ...: one line, no traceback
        reason = str(error.orig).splitlines()[0] if error.orig else type(error).__name__
        print(f"keel saga: {service}'s database: {reason}", file=sys.stderr)
        return 2
    finally:
        await db.dispose()


async def _show(db: Database, service: str, saga_id: str, as_json: bool) -> int:
    state = await show(db, saga_id)
    if state is None:
        print(f"no saga {saga_id!r} in {service}'s database", file=sys.stderr)
        return 1
    print(_json(state) if as_json else _text(state))
    return 0


def _line(found: operate.Summary) -> str:
    error = found.error.splitlines()[0] if found.error else "-"
    return f"{found.id}  {found.name}  {found.status}  {found.updated_at.isoformat()}  {error}"


async def _list(db: Database, statuses: list[str], limit: int, as_json: bool) -> int:
    listed = await operate.recent(db, statuses=statuses, limit=limit)
    if as_json:
        print(json.dumps([{k: plain(v) for k, v in dataclasses.asdict(s).items()} for s in listed]))
    else:
        for found in listed:
            print(_line(found))
        if not listed:  # (on stderr: stdout stays the list, empty)
            which = f" {' or '.join(statuses)}" if statuses else ""
            print(f"no{which} sagas", file=sys.stderr)
    return 0


async def _resume(db: Database, service: str, saga_id: str, as_json: bool) -> int:
    try:
        status = await operate.reopen(db, saga_id)
    except operate.NotResumableError as error:
        print(f"keel saga resume: {error} in {service}'s database", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps({"id": saga_id, "status": status}))
    else:
        print(
            f"saga {saga_id}: FAILED -> {status}; a running process of {service} takes it "
            "at its next recovery pass"
        )
    return 0


def _limit(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return value


def add_commands(commands: Any) -> None:
    """The show, list and resume subcommands on `commands` (an argparse subparsers action)."""
    shown = commands.add_parser("show", help="a saga's recorded state and steps")
    shown.add_argument("service", metavar="NAME", help="the service's folder (its database)")
    shown.add_argument("saga_id", metavar="ID")
    listed = commands.add_parser("list", help="the service's sagas, last updated first")
    listed.add_argument("service", metavar="NAME", help="the service's folder (its database)")
    listed.add_argument(
        "--status", action="append", default=[], choices=STATUSES, help="only these (repeat)"
    )
    listed.add_argument("--limit", type=_limit, default=operate.LIMIT, help="at most N sagas")
    resumed = commands.add_parser("resume", help="drive a FAILED saga again (after a fix)")
    resumed.add_argument("service", metavar="NAME", help="the service's folder (its database)")
    resumed.add_argument("saga_id", metavar="ID")
    for parser in (shown, listed, resumed):
        parser.add_argument("--json", action="store_true", help="JSON output")


def run(command: str, args: argparse.Namespace) -> int:
    """Run the parsed `show`, `list` or `resume` command."""
    service, as_json = args.service, args.json
    if command == "list":
        return asyncio.run(_on(service, lambda db: _list(db, args.status, args.limit, as_json)))
    if command == "resume":
        return asyncio.run(_on(service, lambda db: _resume(db, service, args.saga_id, as_json)))
    return asyncio.run(_on(service, lambda db: _show(db, service, args.saga_id, as_json)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keel.saga")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run(args.command, args)


if __name__ == "__main__":
    raise SystemExit(main())
