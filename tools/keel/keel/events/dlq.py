"""`keel events dlq NAME`: list a service's dead letters; `--replay [ID ...]` republishes them.

`register` only adds the parser: NATS is imported when the command runs.

keel events dlq acme.catalog.v1.CatalogService
keel events dlq acme.catalog.v1.CatalogService --replay            # every dead letter
keel events dlq acme.catalog.v1.CatalogService --replay evt_01J...  # these events
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any


def register(commands: Any) -> None:
    """Add `events dlq` to the `keel` command's subparsers."""
    events = commands.add_parser("events", help="inspect and repair event delivery")
    actions = events.add_subparsers(dest="events_command", required=True)
    dlq = actions.add_parser("dlq", help="list a service's dead letters, or replay them")
    dlq.add_argument("service", metavar="NAME", help="full service name, e.g. acme.x.v1.XService")
    dlq.add_argument(
        "--replay",
        nargs="*",
        metavar="ID",
        help="publish these event ids again (none given: every dead letter)",
    )
    dlq.add_argument("--nats-url", default="", help="broker (default: KEEL_NATS_URL)")
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
        print("keel events: no broker: pass --nats-url or set KEEL_NATS_URL", file=sys.stderr)
        return 2
    return asyncio.run(_run(url, args.service, args.replay))


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
            print(f"replayed {letter.event_id} to {letter.subject}")
        for event_id in sorted(missing):
            print(f"keel events: {event_id} is not a dead letter of {service}", file=sys.stderr)
        return 1 if missing else 0
    finally:
        await nc.close()
