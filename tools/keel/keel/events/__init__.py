"""Keel events: typed events over NATS JetStream, with a transactional outbox and an inbox.

Generated publishers (`Publisher`) write events into the service's database in the same
transaction as the state change; a `Relay` publishes them to JetStream. Generated subscribers
(`Subscriber`) are driven by `Consumers`, which handle each event once per service through the
inbox. See docs/events.md.
"""

from __future__ import annotations

from keel.events import tables
from keel.events.broker import Broker, start_broker
from keel.events.consumer import Consumers
from keel.events.ids import new_event_id
from keel.events.publisher import Publisher
from keel.events.relay import Relay
from keel.events.spec import EventContext, EventSpec, Handler, Subscriber, SubscriberSpec

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
    "new_event_id",
    "start_broker",
    "tables",
]
