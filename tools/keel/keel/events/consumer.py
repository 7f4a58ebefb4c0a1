"""Consumers: each handler pull-consumes its durable consumer and handles events with an inbox.

For each fetched batch: decode the protobuf payloads (undecodable: dead-lettered at once), then
in one transaction skip the events whose ids are in `keel_inbox`, call the handler for the
others and insert their inbox rows; commit, then ack (keel.events.inbox). Each handler handles
its events one at a time, in stream order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext

from keel.events import inbox, names, provision
from keel.events.database import Database
from keel.events.spec import EventHandler, Handler, Subscriber
from keel.runtime import config, logs
from keel.runtime.config import Settings

_log = logs.get_logger("keel.events")


class Loop:
    """One handler's consuming loop: fetch a batch, handle it (keel.events.inbox), repeat."""

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
            try:  # a task of its own: handlers bind the event's call (a context variable)
                await asyncio.create_task(self._settle(messages))
            except Exception as error:
                _log.warning("events not settled", consumer=self.durable, error=repr(error))

    async def _settle(self, messages: list[Msg]) -> None:
        beat = asyncio.create_task(self._in_progress(messages))
        try:
            await inbox.handle(self, await inbox.decode(self, messages))
        finally:
            beat.cancel()

    async def _in_progress(self, messages: list[Msg]) -> None:
        """While a batch is handled, tell the broker every half ack wait that it is, so a batch
        of slow handlers is not delivered again meanwhile."""
        while True:
            await asyncio.sleep(self.owner.settings.events_ack_wait / 2)
            for message in messages:
                with contextlib.suppress(Exception):  # settled already, or the broker is away
                    await message.in_progress()


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
        self._loops: list[Loop] = []
        self._ready = asyncio.Event()
        self._main: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Provision, then consume every handler's durable consumer (waiting for the broker
        at most KEEL_EVENTS_START_WAIT seconds, then on in the background)."""
        self.stopping = False
        self._ready.clear()
        self._main = asyncio.create_task(self._connect(), name="keel-consumers")
        await provision.started(
            self._main, self._ready, self.settings.events_start_wait, "event consumers"
        )

    async def _connect(self) -> None:
        self.nc = await provision.connect(self.nats_url, "keel-consumers")
        self.js = self.nc.jetstream()
        await self._provision(self.js)
        for loop in self._loops:
            loop.task = asyncio.create_task(loop.run(), name=f"keel-consumer-{loop.durable}")
        self._ready.set()

    async def _provision(self, js: JetStreamContext) -> None:
        for subscriber in self.subscribers:
            declared = type(subscriber).__keel_subscriber__
            await provision.ensure_dead_letters(js, declared.service, self.settings)
            for handler in declared.handlers:
                await provision.ensure_event_stream(js, handler.spec, self.settings)
                durable = await provision.ensure_consumer(
                    js, declared.service, handler.spec, self.settings
                )
                loop = Loop(self, declared.service, handler, subscriber.handler_for(handler))
                loop.sub = await js.pull_subscribe_bind(durable, handler.spec.stream)
                self._loops.append(loop)

    async def stop(self) -> None:
        """Stop fetching, finish the events being handled, disconnect."""
        self.stopping = True
        if self._main is not None and not self._main.done():
            self._main.cancel()  # still connecting or provisioning
        if self._main is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._main
            self._main = None
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
