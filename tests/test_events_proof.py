"""Issue 10's proof, on real nats-server processes and keel.data databases (SQLite files; the
killed subscriber also on PostgreSQL, the broker outage in test_events_databases too): a
publisher commits a few hundred state changes with their events, a subscriber counts effects
in its own table, and each event has exactly one effect however the broker or the subscriber
dies.

Also the subscribing process of the crash test: `python -m tests.test_events_proof DB_URL URL`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import keel
import prometheus_client
import pytest
from acme.catalog.v1 import catalog_keel
from acme.orders.v1 import orders_keel, orders_pb2
from keel.data import Database
from keel.events import tables
from keel.runtime import correlation
from keel.runtime.config import Settings
from keel.testing.nats import Broker, eventually, nats_broker
from opentelemetry import trace
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

__all__ = ["nats_broker"]  # the fixture, for pytest

REPO = Path(__file__).resolve().parent.parent
SERVICE = "acme.catalog.v1.CatalogService"
PLACED = orders_keel.ORDER_PLACED
OrderServicePublisher = orders_keel.OrderServicePublisher  # as keel gen wrote it


publisher_metadata = MetaData()
orders = Table(
    "orders",
    publisher_metadata,
    Column("id", String(32), primary_key=True),
    Column("total", Integer, nullable=False),
)
tables.add_to(publisher_metadata)

subscriber_metadata = MetaData()
effects = Table(
    "effects",
    subscriber_metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(32), nullable=False),
    Column("event_id", String(32), nullable=False),
)
tables.add_to(subscriber_metadata)


class CatalogServiceSubscriber(catalog_keel.CatalogServiceSubscriber):
    """The generated subscriber, with a handler that records one effect per placed order."""

    def __init__(self, poison: frozenset[str] = frozenset()) -> None:
        self.poison = poison
        self.seen: list[dict[str, Any]] = []

    async def on_order_cancelled(
        self, event: orders_pb2.OrderCancelled, context: keel.events.EventContext
    ) -> None:
        pass

    async def on_order_placed(
        self, event: orders_pb2.OrderPlaced, context: keel.events.EventContext
    ) -> None:
        span = trace.get_current_span().get_span_context()
        self.seen.append(
            {
                "order_id": event.order_id,
                "context": context,
                "logged_correlation_id": correlation.current(),
                "trace_id": span.trace_id,
            }
        )
        if event.order_id in self.poison:
            raise RuntimeError(f"cannot handle {event.order_id}")
        await context.session.execute(
            insert(effects).values(order_id=event.order_id, event_id=context.event_id)
        )


async def sqlite(path: Path, metadata: MetaData) -> Database:
    """A keel.data SQLite database file with `metadata`'s tables."""
    database = Database(f"sqlite+aiosqlite:///{path}", tables=metadata)
    async with database.transaction():  # creates the tables
        pass
    return database


def settings(url: str, **changes: Any) -> Settings:
    """Event settings for tests: quick retries and redeliveries."""
    chosen: dict[str, Any] = {
        "nats_url": url,
        "events_ack_wait": 2.0,
        "events_backoff": (0.05,),
        "events_max_deliver": 3,
        "events_poll_interval": 0.2,
        **changes,
    }
    return Settings(**chosen)


async def place(database: Database, first: int, count: int) -> None:
    """Commit `count` orders, each with its OrderPlaced event."""
    for number in range(first, first + count):
        async with database.transaction() as session:
            await session.execute(insert(orders).values(id=f"o{number}", total=number))
            await OrderServicePublisher(session).order_placed(
                orders_pb2.OrderPlaced(order_id=f"o{number}", total_cents=number)
            )


def gauge(name: str) -> float:
    """A metric of this process, as Prometheus reports it (-1 if absent)."""
    value = prometheus_client.REGISTRY.get_sample_value(name)
    return -1.0 if value is None else value


async def effect_counts(database: Database) -> tuple[int, int]:
    """(effect rows, distinct orders among them)."""
    async with database.transaction(readonly=True) as session:
        rows, distinct = (
            await session.execute(select(func.count(), func.count(effects.c.order_id.distinct())))
        ).one()
    return int(rows), int(distinct)


async def outbox_left(database: Database) -> int:
    async with database.transaction(readonly=True) as session:
        return int(await session.scalar(select(func.count()).select_from(tables.outbox)) or 0)


@pytest.fixture
async def publisher_db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await sqlite(tmp_path / "orders.db", publisher_metadata)
    yield database
    await database.dispose()


@pytest.fixture
async def subscriber_db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await sqlite(tmp_path / "catalog.db", subscriber_metadata)
    yield database
    await database.dispose()


N = 300


async def test_broker_killed_mid_burst_every_event_has_one_effect(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database
) -> None:
    await broker_outage(nats_broker, publisher_db, subscriber_db)


async def broker_outage(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database, n: int = N
) -> None:
    """SIGKILL the broker mid-burst, start it again: each of `n` events has one effect."""
    chosen = settings(nats_broker.url)
    relay = keel.events.Relay(publisher_db, settings=chosen, publishes=[PLACED])
    consumers = keel.events.Consumers(subscriber_db, [CatalogServiceSubscriber()], settings=chosen)
    await relay.start()
    await consumers.start()
    try:
        burst = asyncio.create_task(place(publisher_db, 0, n))

        async def some_relayed() -> bool:
            return relay.sent >= n // 5

        await eventually(some_relayed, what="a fifth of the events relayed")
        nats_broker.kill()
        await burst  # the outbox takes commits while the broker is away
        left = await outbox_left(publisher_db)
        assert left > 0

        async def lag_reported() -> bool:
            return gauge("keel_events_outbox_pending") == left and (
                gauge("keel_events_outbox_lag_seconds") > 0
            )

        await eventually(lag_reported, what="the outbox's pending rows and lag measured")
        nats_broker.restart()

        async def all_handled() -> bool:
            return (await effect_counts(subscriber_db))[0] >= n

        await eventually(all_handled, timeout=60, what=f"{n} effects")
        await eventually(lambda: _zero(outbox_left(publisher_db)), what="an empty outbox")
    finally:
        await consumers.stop()
        await relay.stop()
    assert await effect_counts(subscriber_db) == (n, n)


async def _zero(count: Any) -> bool:
    left: int = await count
    return left == 0


async def _start_subscriber(database_url: str, url: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.test_events_proof", database_url, url],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("KEEL_")},
            "KEEL_PORT": "0",
            "KEEL_HOST": "127.0.0.1",
            "KEEL_METRICS_PORT": "0",
            "KEEL_LOG_FORMAT": "json",
        },
    )
    assert process.stdout is not None
    while True:  # keel.serve says "serving" once its background tasks started
        line = await asyncio.to_thread(process.stdout.readline)
        assert line, "the subscriber exited before serving"
        if '"event":"serving"' in line.replace(" ", ""):
            return process


def _end(process: subprocess.Popen[str], how: signal.Signals) -> int:
    if process.poll() is None:
        process.send_signal(how)
    code = process.wait(30)
    if process.stdout is not None:
        process.stdout.close()
    return code


def both_metadata() -> MetaData:
    """The publisher's and the subscriber's tables in one metadata (one database for both)."""
    metadata = MetaData()
    for source in (publisher_metadata, subscriber_metadata):
        for table in source.tables.values():
            if table.name not in metadata.tables:
                table.to_metadata(metadata)
    return metadata


async def test_subscriber_killed_mid_burst_every_event_has_one_effect(
    nats_broker: Broker, keel_database_url: str
) -> None:
    """SIGKILL the subscribing process (`keel.serve` with its consumers) mid-burst and start it
    again: each event has one effect. On keel.data's SQLite and on PostgreSQL; the publisher
    and the subscriber share the database (two processes writing it)."""
    db = Database(keel_database_url, tables=both_metadata())
    async with db.transaction():  # creates the tables
        pass
    relay = keel.events.Relay(db, settings=settings(nats_broker.url))
    await relay.start()
    process = await _start_subscriber(keel_database_url, nats_broker.url)
    try:
        burst = asyncio.create_task(place(db, 0, N))

        async def some_handled() -> bool:
            return (await effect_counts(db))[0] >= N // 5

        await eventually(some_handled, what="a fifth of the events handled")
        _end(process, signal.SIGKILL)
        await burst
        process = await _start_subscriber(keel_database_url, nats_broker.url)

        async def all_handled() -> bool:
            return (await effect_counts(db))[0] >= N

        await eventually(all_handled, timeout=60, what=f"{N} effects")
        assert _end(process, signal.SIGTERM) == 0
    finally:
        _end(process, signal.SIGKILL)
        await relay.stop()
    try:
        assert await effect_counts(db) == (N, N)
    finally:
        await db.dispose()


def _subscribe(database_url: str, url: str) -> None:
    """The subscribing service: keel.serve with its consumers as a background task."""
    database = Database(database_url)
    consumers = keel.events.Consumers(
        database, [CatalogServiceSubscriber()], settings=settings(url)
    )
    keel.serve([], background=[consumers])  # until SIGTERM: stop consuming, finish, exit 0


if __name__ == "__main__":
    _subscribe(sys.argv[1], sys.argv[2])
