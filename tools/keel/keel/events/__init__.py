"""Keel events: typed events over NATS JetStream, with a transactional outbox and an inbox.

Generated publishers (`Publisher`) write events into the service's database in the same
transaction as the state change; a `Relay` publishes them to JetStream. Generated subscribers
(`Subscriber`) are driven by `Consumers`, which handle each event once per service through the
inbox; `background(db, publishers=..., subscribers=...)` makes both for `keel.serve`. See
docs/events.md. Names load on first use: a generated module needs only the light
declarations (keel.events.spec, keel.events.publisher), not NATS or SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.events import tables
    from keel.events.broker import Broker, start_broker
    from keel.events.consumer import Consumers
    from keel.events.ids import new_event_id
    from keel.events.publisher import Publisher
    from keel.events.relay import Relay
    from keel.events.spec import (
        EventContext,
        EventSpec,
        Handler,
        Subscriber,
        SubscriberSpec,
    )
    from keel.events.wiring import background

_EXPORTS = {
    "Broker": "keel.events.broker",
    "Consumers": "keel.events.consumer",
    "EventContext": "keel.events.spec",
    "EventSpec": "keel.events.spec",
    "Handler": "keel.events.spec",
    "Publisher": "keel.events.publisher",
    "Relay": "keel.events.relay",
    "Subscriber": "keel.events.spec",
    "SubscriberSpec": "keel.events.spec",
    "background": "keel.events.wiring",
    "new_event_id": "keel.events.ids",
    "start_broker": "keel.events.broker",
}

__all__ = [
    "Broker",
    "Consumers",
    "EventContext",
    "EventSpec",
    "Handler",
    "Publisher",
    "Relay",
    "Subscriber",
    "SubscriberSpec",
    "background",
    "new_event_id",
    "start_broker",
    "tables",
]


def __getattr__(name: str) -> Any:
    if name == "tables":
        return importlib.import_module("keel.events.tables")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keel.events' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
