"""The outbox relay: publishes committed events to JetStream, in order, and marks them sent.

Each pass reads up to KEEL_EVENTS_BATCH unsent rows in id order, publishes them with
`Nats-Msg-Id` = the event id (pipelined, then every ack awaited), and deletes them (or marks
them sent when KEEL_EVENTS_KEEP_SENT keeps them). A commit that wrote events wakes it at once;
otherwise it polls every KEEL_EVENTS_POLL_INTERVAL. A broker outage or database error makes it
retry the same rows with backoff (the broker drops the repeats by their id); a crash leaves the
rows unsent for the next start. On PostgreSQL the rows are locked `FOR UPDATE SKIP LOCKED`, so
the relays of several worker processes share the work; on SQLite every relay reads the same
rows and the duplicates die in the broker's duplicate window.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client as NatsClient
from sqlalchemy import BindParameter, Row, bindparam, delete, func, select, update

from keel.data import Database
from keel.events import carry, provision, publisher, tables
from keel.events.metrics import metrics
from keel.events.spec import EventSpec
from keel.runtime import config, logs
from keel.runtime.config import Settings

# Built once: a statement built per batch with `in_(ids)` leaves a reference cycle for the
# garbage collector (SQLAlchemy's cloned-set of each bound parameter holds itself).
_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)
_DELETE_SENT = delete(tables.outbox).where(tables.outbox.c.id.in_(_IDS))
_MARK_SENT = (
    update(tables.outbox).where(tables.outbox.c.id.in_(_IDS)).values(sent_at=bindparam("sent"))
)

_log = logs.get_logger("keel.events.relay")
_COLUMNS = (
    tables.outbox.c.id,
    tables.outbox.c.subject,
    tables.outbox.c.stream,
    tables.outbox.c.name,
    tables.outbox.c.payload,
    tables.outbox.c.headers,
    tables.outbox.c.created_at,
)


class Relay:
    """Publishes a service's outbox. A server background task (`start`/`stop`):

    keel.serve([Orders(db)], background=[keel.events.Relay(db)])
    """

    def __init__(
        self,
        database: Database,
        *,
        nats_url: str | None = None,
        settings: Settings | None = None,
        publishes: Sequence[EventSpec] = (),
    ) -> None:
        self.database = database
        self.settings = settings or config.current()
        self.nats_url = nats_url if nats_url is not None else self.settings.nats_url
        self.publishes = tuple(publishes)
        self.sent = 0
        """Events this relay has had acknowledged by the broker."""
        self.passes = 0
        """Passes over the outbox done (each publishes up to KEEL_EVENTS_BATCH events)."""
        self._nc: NatsClient | None = None
        self._wake = asyncio.Event()
        self._retry = asyncio.Event()
        self._ready = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._streams: set[str] = set()
        self._gauged = 0.0

    async def start(self) -> None:
        """Connect, make sure the declared streams exist, and start relaying (waiting for the
        broker at most KEEL_EVENTS_START_WAIT seconds, then on in the background)."""
        provision.require_url(self.nats_url)
        self._stopping = False
        self._ready.clear()
        publisher.wake_on_commit(self._wake)
        self._task = asyncio.create_task(self._main(), name="keel-relay")
        await provision.started(
            self._task, self._ready, self.settings.events_start_wait, "outbox relay"
        )

    async def _main(self) -> None:
        await provision.retrying("outbox relay", self._provision, self.settings)
        self._ready.set()
        await self._run()

    async def _provision(self) -> None:
        if self._nc is None:
            self._nc = await provision.connect(self.nats_url, "keel-relay", self._reconnected)
        js = self._nc.jetstream()
        self._streams.clear()
        for spec in self.publishes:
            await provision.ensure_event_stream(js, spec, self.settings)
        self._streams.update(spec.stream for spec in self.publishes)

    async def stop(self) -> None:
        """Publish what is pending (one last pass, if the broker answers), then disconnect."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        self._retry.set()
        publisher.forget(self._wake)
        if not self._ready.is_set():
            self._task.cancel()  # still waiting for the broker
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._task = None
        if self._nc is not None:
            await self._nc.close()
            self._nc = None

    async def _reconnected(self) -> None:
        self._streams.clear()  # the broker may have come back without its store
        self._retry.set()  # retry now, not after the backoff
        self._wake.set()

    def wake(self) -> None:
        """Look at the outbox now (a commit in another process, say)."""
        self._wake.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                count = await self.flush()
                self.passes += 1
                failures = 0
            except Exception as error:
                failures += 1
                self._streams.clear()  # provision again: the stream may be gone
                delay = min(self.settings.events_max_backoff, 0.1 * 2**failures)
                _log.warning("outbox relay retrying", error=repr(error), delay=delay)
                if self._stopping:
                    return
                await self._back_off(delay)
                continue
            if self._stopping:
                return
            if count < self.settings.events_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.events_poll_interval)

    async def _back_off(self, delay: float) -> None:
        """Wait `delay` seconds, or until the broker is back or the relay stops (commits do not
        cut it short); the outbox gauges are measured meanwhile, as the lag grows."""
        self._retry.clear()
        deadline = time.monotonic() + delay
        while not self._stopping and (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(Exception):
                await self._gauge()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retry.wait(), min(left, 1.0))
                return

    async def flush(self) -> int:
        """Publish one batch of pending events; how many were sent."""
        if self.database.dialect == "postgresql":
            async with self.database.transaction() as session:
                query = select(*_COLUMNS).where(tables.outbox.c.sent_at.is_(None))
                query = query.order_by(tables.outbox.c.id).limit(self.settings.events_batch)
                rows = (await session.execute(query.with_for_update(skip_locked=True))).all()
                if rows:
                    await self._publish(rows)
                    await session.execute(*self._done([row.id for row in rows]))
        else:  # read without the write lock: producers go on meanwhile
            async with self.database.transaction(readonly=True) as session:
                query = select(*_COLUMNS).where(tables.outbox.c.sent_at.is_(None))
                query = query.order_by(tables.outbox.c.id).limit(self.settings.events_batch)
                rows = (await session.execute(query)).all()
            if rows:
                await self._publish(rows)
                async with self.database.transaction() as session:
                    await session.execute(*self._done([row.id for row in rows]))
        measured = metrics()
        for row in rows:
            measured.published.labels(row.subject).inc()
        self.sent += len(rows)
        if rows:
            await self._gauge()
        else:  # nothing pending: no query needed
            measured.outbox_pending.set(0)
            measured.outbox_lag.set(0)
        return len(rows)

    def _done(self, ids: list[str]) -> tuple[Any, dict[str, Any]]:
        """The statement (and its values) that ends the rows `ids` once they are published."""
        if self.settings.events_keep_sent > 0:
            return _MARK_SENT, {"ids": ids, "sent": datetime.datetime.now(datetime.UTC)}
        return _DELETE_SENT, {"ids": ids}

    async def _publish(self, rows: Sequence[Row[Any, Any, Any, Any, Any, Any, Any]]) -> None:
        assert self._nc is not None
        if not self._nc.is_connected:  # do not queue publishes that cannot be acked
            raise ConnectionError(f"broker {self.nats_url} unreachable")
        js = self._nc.jetstream()
        for row in rows:
            if row.stream not in self._streams:
                declared = [spec for spec in self.publishes if spec.stream == row.stream]
                for spec in declared:
                    await provision.ensure_event_stream(js, spec, self.settings)
                if not declared:
                    await provision.ensure_stream(
                        js, row.stream, [_package_subjects(row.name)], self.settings
                    )
                self._streams.add(row.stream)
        futures = []
        for row in rows:
            headers = {
                **row.headers,
                carry.MSG_ID: row.id,
                carry.EVENT_ID: row.id,
                carry.EVENT_NAME: row.name,
                carry.PUBLISHED_AT: _aware(row.created_at).isoformat(),
            }
            futures.append(await js.publish_async(row.subject, row.payload, headers=headers))
        await asyncio.wait_for(asyncio.gather(*futures), self.settings.events_publish_timeout)

    async def _gauge(self) -> None:
        """Outbox pending and lag (and pruning of kept rows), at most once a second."""
        now = time.monotonic()
        if now - self._gauged < 1.0:
            return
        self._gauged = now
        outbox = tables.outbox
        async with self.database.transaction(readonly=True) as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(outbox.c.created_at)).where(
                        outbox.c.sent_at.is_(None)
                    )
                )
            ).one()
        measured = metrics()
        measured.outbox_pending.set(count)
        lag = 0.0
        if oldest is not None:
            lag = (datetime.datetime.now(datetime.UTC) - _aware(oldest)).total_seconds()
        measured.outbox_lag.set(max(0.0, lag))
        if self.settings.events_keep_sent > 0:
            cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(
                seconds=self.settings.events_keep_sent
            )
            async with self.database.transaction() as session:
                await session.execute(delete(outbox).where(outbox.c.sent_at < cutoff))


def _package_subjects(name: str) -> str:
    return f"{name.rpartition('.')[0]}.>"


def _aware(moment: datetime.datetime) -> datetime.datetime:
    """SQLite gives back naive datetimes: they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)
