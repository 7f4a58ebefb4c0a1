"""Consumers: each handler pull-consumes its durable consumer and handles events with an inbox.

For each message: decode the protobuf payload (undecodable: dead-lettered at once), then in one
transaction skip it if its id is in `keel_inbox`, else call the handler and insert the inbox
row; commit, then ack. A handler that raises rolls back; the event is retried after
KEEL_EVENTS_BACKOFF, and after KEEL_EVENTS_MAX_DELIVER deliveries it is published to the
service's dead-letter subject with the error and the delivery count, then terminated. Each
handler handles its events one at a time, in stream order.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import DecodeError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from keel.events import carry, names, provision, tables
from keel.events.database import Database
from keel.events.dead_letters import dead_letter
from keel.events.metrics import metrics
from keel.events.spec import EventContext, EventHandler, Handler, Subscriber
from keel.runtime import config, logs
from keel.runtime.config import Settings

_log = logs.get_logger("keel.events")


class _Loop:
    """One handler's consuming loop."""

    def __init__(
        self, owner: Consumers, service: str, handler: Handler, call: EventHandler
    ) -> None:
        self.owner = owner
        self.service = service
        self.spec = handler.spec
        self.call = call
        self.durable = names.durable(service, handler.spec.subject)
        self.fetching = False
        self.task: asyncio.Task[None] | None = None
        self.sub: JetStreamContext.PullSubscription | None = None

    async def run(self) -> None:
        assert self.sub is not None
        settings = self.owner.settings
        while not self.owner.stopping:
            self.fetching = True
            try:
                messages = await self.sub.fetch(settings.events_batch, timeout=1.0)
            except (NatsTimeout, TimeoutError):
                continue
            except asyncio.CancelledError:
                if self.owner.stopping:
                    return
                raise
            except Exception as error:
                _log.warning("event fetch failed", consumer=self.durable, error=repr(error))
                await asyncio.sleep(0.5)
                continue
            finally:
                self.fetching = False
            for index, message in enumerate(messages):
                if self.owner.stopping:
                    for rest in messages[index:]:
                        with contextlib.suppress(Exception):
                            await rest.nak()
                    return
                try:
                    await asyncio.create_task(self.handle(message))
                except Exception as error:
                    _log.warning("event not settled", consumer=self.durable, error=repr(error))

    async def handle(self, message: Msg) -> None:
        """Handle one delivery (in a task of its own: the bound call is a context variable)."""
        subject = self.spec.subject
        counted = metrics()
        delivery = message.metadata.num_delivered or 1
        counted.delivered.labels(subject).inc()
        if delivery > 1:
            counted.redelivered.labels(subject).inc()
        headers = message.headers or {}
        event_id = headers.get(carry.EVENT_ID) or headers.get(carry.MSG_ID) or ""
        if not event_id:
            event_id = f"seq-{message.metadata.sequence.stream}"
        try:
            event = self.spec.message.FromString(message.data)
        except DecodeError as error:
            await self.dead(message, f"undecodable payload: not {self.spec.name}: {error}", 1)
            return
        try:
            with carry.handling(self.service, subject, headers) as correlation_id:
                handled = await self.transact(event, event_id, correlation_id, delivery, headers)
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            if delivery >= self.owner.settings.events_max_deliver:
                await self.dead(message, reason, delivery)
                return
            backoff = self.owner.settings.events_backoff
            delay = backoff[min(delivery, len(backoff)) - 1]
            _log.warning(
                "event handler failed",
                consumer=self.durable,
                event_id=event_id,
                delivery=delivery,
                retry_in=delay,
                error=reason,
                correlation_id=headers.get(carry.CORRELATION, ""),
            )
            await message.nak(delay=delay)
            return
        await message.ack()
        counted.acked.labels(subject).inc()
        if not handled:
            _log.debug("event already handled", consumer=self.durable, event_id=event_id)

    async def transact(
        self,
        event: Any,
        event_id: str,
        correlation_id: str,
        delivery: int,
        headers: dict[str, str],
    ) -> bool:
        """The handler and the inbox row in one transaction; False if it was handled before."""
        inbox = tables.inbox
        try:
            async with self.owner.database.begin() as session:
                seen = await session.scalar(
                    select(inbox.c.event_id).where(
                        inbox.c.consumer == self.durable, inbox.c.event_id == event_id
                    )
                )
                if seen is not None:
                    return False
                context = EventContext(
                    event_id=event_id,
                    subject=self.spec.subject,
                    correlation_id=correlation_id,
                    delivery=delivery,
                    published_at=_published_at(headers),
                    session=session,
                )
                await self.call(event, context)
                await session.execute(
                    insert(inbox).values(
                        consumer=self.durable,
                        event_id=event_id,
                        subject=self.spec.subject,
                        handled_at=datetime.datetime.now(datetime.UTC),
                    )
                )
        except IntegrityError:  # handled meanwhile by another delivery of the same event
            return False
        return True

    async def dead(self, message: Msg, reason: str, delivery: int) -> None:
        assert self.owner.js is not None
        await dead_letter(
            self.owner.js, self.service, self.durable, message, reason=reason, delivery=delivery
        )
        await message.term()
        metrics().dead_lettered.labels(self.spec.subject).inc()
        _log.error(
            "event dead-lettered",
            consumer=self.durable,
            subject=self.spec.subject,
            delivery=delivery,
            error=reason,
        )


def _published_at(headers: dict[str, str]) -> datetime.datetime:
    text = headers.get(carry.PUBLISHED_AT)
    if text:
        with contextlib.suppress(ValueError):
            return datetime.datetime.fromisoformat(text)
    return datetime.datetime.now(datetime.UTC)


class Consumers:
    """The durable consumers of a service's subscribers. A server background task:

    keel.serve([Catalog(db)], background=[keel.events.Consumers(db, [CatalogEvents(db)])])

    `start` creates (or updates) the streams, the durable consumers and the dead-letter stream,
    then consumes; `stop` stops fetching, lets the events being handled finish, and returns
    fetched events not yet handled to the broker.
    """

    def __init__(
        self,
        database: Any,
        subscribers: Sequence[Subscriber],
        *,
        nats_url: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.database = Database(database)
        self.subscribers = tuple(subscribers)
        self.settings = settings or config.current()
        self.nats_url = nats_url if nats_url is not None else self.settings.nats_url
        self.stopping = False
        self.nc: NatsClient | None = None
        self.js: JetStreamContext | None = None
        self._loops: list[_Loop] = []

    async def start(self) -> None:
        """Provision, then consume every handler's durable consumer."""
        self.nc = await provision.connect(self.nats_url, "keel-consumers")
        self.js = js = self.nc.jetstream()
        self.stopping = False
        for subscriber in self.subscribers:
            declared = type(subscriber).__keel_subscriber__
            await provision.ensure_dead_letters(js, declared.service, self.settings)
            for handler in declared.handlers:
                await provision.ensure_event_stream(js, handler.spec, self.settings)
                durable = await provision.ensure_consumer(
                    js, declared.service, handler.spec, self.settings
                )
                loop = _Loop(self, declared.service, handler, subscriber.handler_for(handler))
                loop.sub = await js.pull_subscribe_bind(durable, handler.spec.stream)
                self._loops.append(loop)
        for loop in self._loops:
            loop.task = asyncio.create_task(loop.run(), name=f"keel-consumer-{loop.durable}")

    async def stop(self) -> None:
        """Stop fetching, finish the events being handled, disconnect."""
        self.stopping = True
        for loop in self._loops:
            if loop.fetching and loop.task is not None:
                loop.task.cancel()
        await asyncio.gather(
            *(loop.task for loop in self._loops if loop.task is not None),
            return_exceptions=True,
        )
        self._loops.clear()
        if self.nc is not None:
            await self.nc.close()
            self.nc = self.js = None
