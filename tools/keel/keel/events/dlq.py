"""`keel events dlq NAME`: list a service's dead letters; `--replay [ID ...]` republishes them.

`register` only adds the parser: NATS is imported when the command runs.

keel events dlq catalog                          # services/catalog: its [tool.keel] serves
keel events dlq acme.catalog.v1.CatalogService   # or the full service name
keel events dlq catalog --replay                 # every dead letter
keel events dlq catalog --replay evt_01J...      # these events
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tomllib
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add `events dlq` to the `keel` command's subparsers."""
    events = commands.add_parser("events", help="inspect and repair event delivery")
    actions = events.add_subparsers(dest="events_command", required=True)
    dlq = actions.add_parser("dlq", help="list a service's dead letters, or replay them")
    dlq.add_argument(
        "service",
        metavar="NAME",
        help="a service folder under --services (catalog) or a full service name",
    )
    dlq.add_argument("--services", type=Path, default=Path("services"), help="service folders")
    dlq.add_argument(
        "--replay",
        nargs="*",
        metavar="ID",
        help="publish these event ids again (none given: every dead letter)",
    )
    dlq.add_argument(
        "--nats-url",
        default="",
        help="broker (default: KEEL_NATS_URL, else the one keel dev runs on --state-dir)",
    )
    dlq.add_argument(
        "--state-dir", type=Path, default=Path(".keel/state"), help="keel dev's state folder"
    )
    dlq.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """The command; exit status 0, 1 when a replayed id is not a dead letter, 2 without a broker."""
    url = args.nats_url
    if not url:
        from keel.runtime import config  # noqa: PLC0415

        try:
            url = config.current().nats_url
        except config.ConfigError as error:
            print(f"keel events: configuration error: {error}", file=sys.stderr)
            return 2
    if not url:
        from keel.events.broker import running_url  # noqa: PLC0415

        url = running_url(args.state_dir / "nats")
    if not url:
        print(
            "keel events: no broker: pass --nats-url or set KEEL_NATS_URL"
            f" (no keel dev is running on {args.state_dir})",
            file=sys.stderr,
        )
        return 2
    try:
        names = served(args.service, args.services)
    except ValueError as error:
        print(f"keel events: {error}", file=sys.stderr)
        return 2
    status = 0
    for name in names:
        status = max(status, asyncio.run(_run(url, name, args.replay)))
    return status


def served(name: str, services: Path) -> list[str]:
    """The full names of the services NAME stands for: itself when it has dots, else those its
    folder's pyproject.toml lists in `[tool.keel] serves`."""
    if "." in name:
        return [name]
    pyproject = services / name / "pyproject.toml"
    if not pyproject.is_file():
        raise ValueError(f"no service {name!r}: {pyproject} does not exist")
    listed = tomllib.loads(pyproject.read_text()).get("tool", {}).get("keel", {}).get("serves")
    if not listed or not all(isinstance(each, str) for each in listed):
        raise ValueError(f"{pyproject}: [tool.keel] serves must list the service's full names")
    return list(listed)


async def _run(url: str, service: str, replay: list[str] | None) -> int:
    from keel.events import dead_letters, provision  # noqa: PLC0415 (keel's parser stays light)

    nc = await provision.connect(url, "keel-events-dlq")
    try:
        js = nc.jetstream()
        letters = await dead_letters.listing(js, service)
        if replay is None:
            for letter in letters:
                print(
                    f"{letter.event_id}\t{letter.subject}\tdeliveries={letter.deliveries}"
                    f"\tcorrelation_id={letter.correlation_id}\t{letter.error}"
                )
            print(f"{len(letters)} dead letter(s) of {service}", file=sys.stderr)
            return 0
        chosen = [x for x in letters if not replay or x.event_id in replay]
        missing = set(replay) - {x.event_id for x in letters}
        for letter in chosen:
            await dead_letters.replay(js, service, letter)
            print(f"replayed {letter.event_id} to {service}'s consumer of {letter.subject}")
        for event_id in sorted(missing):
            print(f"keel events: {event_id} is not a dead letter of {service}", file=sys.stderr)
        return 1 if missing else 0
    finally:
        await nc.close()
