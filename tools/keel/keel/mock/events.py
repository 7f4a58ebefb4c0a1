"""Events on demand: `POST /events/<name>` publishes one of the workspace's declared events
to KEEL_NATS_URL as a Keel service's relay does (its subject and stream, `Nats-Msg-Id`, the
Keel-Event-* headers, a correlation id), so consumers handle it as a real one."""

from __future__ import annotations

import datetime
import importlib
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from keel.events import carry, provision
from keel.events.ids import new_event_id
from keel.events.spec import EventSpec
from keel.gateway.routes import RouteTable
from keel.runtime.config import Settings


def declared(gen: Path) -> dict[str, EventSpec]:
    """Every event the generated code under `gen` declares, by full message name and subject."""
    RouteTable.from_generated(gen)  # imports every generated module, whatever its packages
    found: dict[str, EventSpec] = {}
    for path in sorted(gen.rglob("*_keel.py")):
        name = path.relative_to(gen).with_suffix("").as_posix().replace("/", ".")
        for value in vars(importlib.import_module(name)).values():
            if isinstance(value, EventSpec):
                found[value.name] = found[value.subject] = value
    return found


class Emitter:
    """Publishes declared events (connects to the broker on first use)."""

    def __init__(self, gen: Path, settings: Settings) -> None:
        self.events = declared(gen)
        self.settings = settings
        self._nc: Any = None
        self._streams: set[str] = set()

    async def publish(self, name: str, body: Any) -> str:
        """Publish event `name` (full message name or subject) with `body` (proto JSON); its id.
        LookupError for an event not declared, ValueError for a body that does not parse."""
        spec = self.events.get(name)
        if spec is None:
            raise LookupError(f"no declared event {name!r} (known: {', '.join(self._names())})")
        try:
            message = json_format.ParseDict(body, spec.message())
        except json_format.ParseError as error:
            raise ValueError(f"{spec.name}: {error}") from None
        if self._nc is None:
            self._nc = await provision.connect(self.settings.nats_url, "keel-mock")
        js = self._nc.jetstream()
        if spec.stream not in self._streams:
            await provision.ensure_event_stream(js, spec, self.settings)
            self._streams.add(spec.stream)
        event_id = new_event_id()
        headers = {
            **carry.outgoing(spec.subject),
            carry.MSG_ID: event_id,
            carry.EVENT_ID: event_id,
            carry.EVENT_NAME: spec.name,
            carry.PUBLISHED_AT: datetime.datetime.now(datetime.UTC).isoformat(),
        }
        await js.publish(spec.subject, message.SerializeToString(), headers=headers)
        return event_id

    def _names(self) -> list[str]:
        return sorted({spec.name for spec in self.events.values()})

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
            self._nc = None
