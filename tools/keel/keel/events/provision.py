"""Streams, durable consumers and dead-letter streams, created or updated at start-up.

Idempotent: an existing stream keeps its messages and gains any missing subject; an existing
consumer is updated to the current settings. Storage is on file; streams keep messages
KEEL_EVENTS_MAX_AGE. Consumers have no delivery limit at the broker: Keel counts deliveries
and dead-letters (keel.events.inbox), so a last delivery cut short is delivered again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from keel.events import names
from keel.events.spec import EventSpec
from keel.runtime import logs
from keel.runtime.config import Settings

_log = logs.get_logger("keel.events")


class _Watch:
    """Connection events in the log: one warning per outage, not one per reconnect attempt."""

    def __init__(self, url: str, name: str, reconnected: Reconnected | None) -> None:
        self.url = url
        self.name = name
        self.reconnected = reconnected
        self.down = False
        self.client: NatsClient | None = None

    async def error(self, error: Exception) -> None:
        if not self.down:
            _log.warning("broker error", broker=self.url, client=self.name, error=repr(error))
        self.down = True

    async def disconnected(self) -> None:
        if self.client is not None and self.client.is_closed:  # closed on purpose: no news
            return
        _log.info("broker disconnected", broker=self.url, client=self.name)

    async def back(self) -> None:
        self.down = False
        _log.info("broker reconnected", broker=self.url, client=self.name)
        if self.reconnected is not None:
            await self.reconnected()


Reconnected = Callable[[], Awaitable[None]]


def require_url(url: str) -> None:
    """ValueError when there is no broker URL."""
    if not url:
        raise ValueError("no broker: set KEEL_NATS_URL (keel dev starts one) or pass nats_url")


async def connect(url: str, name: str, reconnected: Reconnected | None = None) -> NatsClient:
    """A connection to the broker at `url` that reconnects for ever (outages delay, never end);
    `reconnected` runs after each reconnection."""
    require_url(url)
    watch = _Watch(url, name, reconnected)
    watch.client = await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        connect_timeout=2,
        allow_reconnect=True,
        error_cb=watch.error,
        disconnected_cb=watch.disconnected,
        reconnected_cb=watch.back,
    )
    return watch.client


async def started(task: asyncio.Task[None], ready: asyncio.Event, wait: float, what: str) -> None:
    """Wait up to `wait` seconds for `task` to connect and provision (`ready`); raise what it
    raised if it failed first. After that it goes on in the background, connecting when the
    broker is there: a service serves without its broker, and its outbox keeps the events."""
    waiter = asyncio.ensure_future(ready.wait())
    try:
        await asyncio.wait({task, waiter}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done() and not ready.is_set():
        task.result()  # its exception
    if not ready.is_set():
        _log.warning(f"{what} waiting for the broker", seconds=wait)
        task.add_done_callback(lambda done: _failed(done, what))


async def retrying(what: str, attempt: Callable[[], Awaitable[None]], settings: Settings) -> None:
    """Run `attempt` (connect and provision) until it succeeds, with backoff up to
    KEEL_EVENTS_MAX_BACKOFF: a broker away or a conflicting stream delays, never ends, the
    relay or the consumers."""
    failures = 0
    while True:
        try:
            await attempt()
            return
        except Exception as error:
            failures += 1
            delay = min(settings.events_max_backoff, 0.1 * 2**failures)
            _log.warning(f"{what} not provisioned, retrying", error=repr(error), retry_in=delay)
            await asyncio.sleep(delay)


def _failed(task: asyncio.Task[None], what: str) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error(f"{what} failed", error=repr(task.exception()))


async def ensure_stream(
    js: JetStreamContext, name: str, subjects: list[str], settings: Settings
) -> None:
    """Create stream `name` for `subjects`, or update it to hold them too."""
    config = StreamConfig(
        name=name,
        subjects=subjects,
        storage=StorageType.FILE,
        duplicate_window=settings.events_duplicate_window,
        max_age=settings.events_max_age,
        discard=DiscardPolicy.OLD,
    )
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        try:
            await js.add_stream(config)
        except BadRequestError:  # created meanwhile by another process
            pass
        else:
            return
        info = await js.stream_info(name)
    have = list(info.config.subjects or [])
    merged = have + [s for s in subjects if s not in have]
    kept = (info.config.duplicate_window, info.config.max_age or 0)
    if merged != have or kept != (settings.events_duplicate_window, settings.events_max_age):
        config.subjects = merged
        await js.update_stream(config)


async def ensure_event_stream(js: JetStreamContext, spec: EventSpec, settings: Settings) -> None:
    """The stream of `spec`'s proto package (`<package>.>`, plus the subject if outside it)."""
    subjects = [f"{spec.package}.>"]
    if not spec.subject.startswith(f"{spec.package}."):
        subjects.append(spec.subject)
    await ensure_stream(js, spec.stream, subjects, settings)


async def ensure_consumer(
    js: JetStreamContext, service: str, spec: EventSpec, settings: Settings
) -> str:
    """The durable pull consumer of `service` for `spec`'s subject and its replay subject
    (keel.events.names.replay_subject, which the stream then holds too); returns its name."""
    durable = names.durable(service, spec.subject)
    replay = names.replay_subject(service, spec.subject)
    await ensure_stream(js, spec.stream, [replay], settings)
    config = ConsumerConfig(
        durable_name=durable,
        filter_subjects=[spec.subject, replay],
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.events_ack_wait,
        max_deliver=-1,  # Keel dead-letters after KEEL_EVENTS_MAX_DELIVER (keel.events.inbox)
        max_ack_pending=max(1000, settings.events_batch * 4),
    )
    await js.add_consumer(spec.stream, config)  # creates, or updates the same durable
    return durable


async def ensure_dead_letters(js: JetStreamContext, service: str, settings: Settings) -> str:
    """The stream of `service`'s dead letters (`keel.dlq.<service>.>`); returns its name."""
    name = names.dlq_stream(service)
    await ensure_stream(js, name, [names.dlq_subjects(service)], settings)
    return name
