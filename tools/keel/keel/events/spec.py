"""What generated publishers and subscribers declare: events, handlers, subscribing services.

Light to import (no SQLAlchemy, no NATS): generated modules import it, and so does every
process that imports them, the gateway included."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from google.protobuf.message import Message

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class EventSpec:
    """One event: a protobuf message published on a NATS subject, kept in a JetStream stream.

    `stream` holds every subject of the message's proto package (`ACME_ORDERS_V1` for
    `acme.orders.v1.>`); `name` is the message's full proto name.
    """

    subject: str
    message: type[Message]
    stream: str
    name: str

    @property
    def package(self) -> str:
        """The proto package of the message (`acme.orders.v1`)."""
        return self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Handler:
    """A subscriber method (`on_order_placed`) handling one event."""

    spec: EventSpec
    method: str


@dataclass(frozen=True)
class SubscriberSpec:
    """A subscribing service (its full name names its durable consumers) and its handlers."""

    service: str
    handlers: tuple[Handler, ...]


@dataclass(frozen=True, slots=True)
class EventContext:
    """What a handler knows of the event it handles.

    `session` is the inbox transaction: whatever the handler writes through it commits with
    the event's inbox row, or not at all. `delivery` counts from 1; above 1 it is a retry.
    """

    event_id: str
    subject: str
    correlation_id: str
    delivery: int
    published_at: datetime
    session: AsyncSession


EventHandler = Callable[[Message, EventContext], Coroutine[Any, Any, None]]


class Subscriber:
    """Base of generated subscriber classes: one `async def on_<event>(self, event, context)`
    per subscribed event, named in `__keel_subscriber__`."""

    __keel_subscriber__: ClassVar[SubscriberSpec]

    def handler_for(self, handler: Handler) -> EventHandler:
        """The bound method that handles `handler`'s event."""
        method: EventHandler = getattr(self, handler.method)
        return method
