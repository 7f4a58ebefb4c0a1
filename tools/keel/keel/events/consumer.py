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

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext

from keel.data import Database
from keel.events import inbox, names, outage, provision
from keel.events.spec import EventHandler, Handler, Subscriber
from keel.runtime import config, logs
from keel.runtime.config import Settings

_log = logs.get_logger("keel.events")
_TAKE_WAITING = 0.01
"""Seconds a fetch waits for the events after the first (those already there come at once)."""


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
        self.stale = False
        """Provision and bind again before the next fetch (the broker came back, maybe
        without its store, or a fetch failed)."""
        self.task: asyncio.Task[None] | None = None
        self.sub: JetStreamContext.PullSubscription | None = None
        self.beats = 0
        """Times this loop told the broker a batch is still being handled."""

    async def bind(self, js: JetStreamContext) -> None:
        """Make sure the stream, dead letters and durable consumer exist; subscribe to it."""
        settings = self.owner.settings
        await provision.ensure_dead_letters(js, self.service, settings)
        await provision.ensure_event_stream(js, self.spec, settings)
        durable = await provision.ensure_consumer(js, self.service, self.spec, settings)
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()
        self.sub = await js.pull_subscribe_bind(durable, self.spec.stream)
        self.stale = False

    async def run(self) -> None:
        settings = self.owner.settings
        failures = 0
        while not self.owner.stopping:
            self.fetching = True
            try:
                if self.stale and self.owner.js is not None:
                    await self.bind(self.owner.js)
                assert self.sub is not None
                messages = await _fetch(self.sub, settings.events_batch)
                failures = 0
            except (NatsTimeout, TimeoutError):
                continue
            except asyncio.CancelledError:
                if self.owner.stopping:
                    return
                raise
            except Exception as error:
                failures += 1
                self.stale = True
                delay = min(settings.events_max_backoff, 0.1 * 2**failures)
                _log.warning(
                    "event fetch failed", consumer=self.durable, error=repr(error), retry_in=delay
                )
                await asyncio.sleep(delay)
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
        except (asyncio.CancelledError, outage.AbandonedError):
            await _return(messages)  # stopped: back to the broker for another delivery
            raise
        finally:
            beat.cancel()

    async def _in_progress(self, messages: list[Msg]) -> None:
        """While a batch is handled, tell the broker every half ack wait that it is, so a batch
        of slow handlers is not delivered again meanwhile."""
        while True:
            await asyncio.sleep(self.owner.settings.events_ack_wait / 2)
            self.beats += 1
            for message in messages:
                with contextlib.suppress(Exception):  # settled already, or the broker is away
                    await message.in_progress()


async def _fetch(sub: JetStreamContext.PullSubscription, batch: int) -> list[Msg]:
    """Up to `batch` events: wait (up to a second) for the first, then take those already
    there. (nats-py's fetch of a batch waits until the batch is full or its timeout passed.)"""
    messages = await sub.fetch(1, timeout=1.0)
    if batch > 1:
        with contextlib.suppress(NatsTimeout, TimeoutError):
            messages += await sub.fetch(batch - 1, timeout=_TAKE_WAITING)
    return messages


async def _return(messages: Sequence[Msg]) -> None:
    """Nak the messages not settled yet, so the broker delivers them again now."""
    for message in messages:
        with contextlib.suppress(Exception):  # settled already (MsgAlreadyAckdError), or away
            await message.nak()


class Consumers:
    """The durable consumers of a service's subscribers. A server background task:

    keel.serve([Catalog(db)], background=[keel.events.Consumers(db, [CatalogEvents(db)])])

    `start` creates (or updates) the streams, the durable consumers and the dead-letter stream,
    then consumes; provisioning that fails (the broker away, a conflicting stream) is retried
    with backoff, and done again whenever the broker comes back. `stop` stops fetching, gives
    the events being handled the grace period (KEEL_GRACE_PERIOD) to finish, then cancels them
    and returns the fetched events not yet handled to the broker (nak).
    """

    def __init__(
        self,
        database: Database,
        subscribers: Sequence[Subscriber],
        *,
        nats_url: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.database = database
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
        provision.require_url(self.nats_url)
        self.stopping = False
        self._ready.clear()
        self._loops = [
            Loop(self, type(s).__keel_subscriber__.service, handler, s.handler_for(handler))
            for s in self.subscribers
            for handler in type(s).__keel_subscriber__.handlers
        ]
        self._main = asyncio.create_task(self._connect(), name="keel-consumers")
        await provision.started(
            self._main, self._ready, self.settings.events_start_wait, "event consumers"
        )

    async def _connect(self) -> None:
        await provision.retrying("event consumers", self._provision, self.settings)
        for loop in self._loops:
            loop.task = asyncio.create_task(loop.run(), name=f"keel-consumer-{loop.durable}")
        self._ready.set()

    async def _provision(self) -> None:
        if self.nc is None:
            self.nc = await provision.connect(self.nats_url, "keel-consumers", self._reconnected)
            self.js = self.nc.jetstream()
        assert self.js is not None
        for loop in self._loops:
            await loop.bind(self.js)

    async def _reconnected(self) -> None:
        for loop in self._loops:  # the broker may have come back without its store
            loop.stale = True

    async def stop(self) -> None:
        """Stop fetching, give the events being handled the grace period, disconnect."""
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
        tasks = [loop.task for loop in self._loops if loop.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.settings.grace_period)
            for task in late:
                _log.warning("event handling cancelled at stop", task=task.get_name())
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._loops.clear()
        if self.nc is not None:
            await self.nc.close()
            self.nc = self.js = None
