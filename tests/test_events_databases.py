"""Outbox and inbox on keel.data's Database, SQLite and PostgreSQL: two relays on one outbox
(two worker processes' worth) and a subscriber on the same database, each event one effect."""

from __future__ import annotations

import asyncio
from pathlib import Path

import keel
import nats
from acme.orders.v1 import orders_pb2
from keel.data import Database
from keel.events import tables
from keel.runtime.server import Background
from keel.testing.nats import Broker, eventually, nats_broker
from sqlalchemy import MetaData, func, insert, select

from tests.test_events_proof import (
    PLACED,
    CatalogServiceSubscriber,
    OrderServicePublisher,
    both_metadata,
    broker_outage,
    effects,
    orders,
    place,
    settings,
)

__all__ = ["nats_broker"]  # the fixture, for pytest

N = 200


def _metadata() -> MetaData:
    metadata = MetaData()
    for table in (orders, effects):
        table.to_metadata(metadata)
    tables.add_to(metadata)
    return metadata


async def test_two_relays_share_an_outbox_and_each_event_has_one_effect(
    nats_broker: Broker, keel_database_url: str
) -> None:
    db = Database(keel_database_url, tables=_metadata())
    chosen = settings(nats_broker.url, events_batch=10)
    relays = [keel.events.Relay(db, settings=chosen) for _ in range(2)]
    subscriber = CatalogServiceSubscriber(poison=frozenset({"o7"}))
    consumers = keel.events.Consumers(db, [subscriber], settings=chosen)
    async with db.transaction():  # creates the tables
        pass
    background: list[Background] = [*relays, consumers]
    try:
        for task in background:
            await task.start()

        async def one(number: int) -> None:
            async with db.transaction() as session:
                await session.execute(insert(orders).values(id=f"o{number}", total=number))
                await OrderServicePublisher(session).order_placed(
                    orders_pb2.OrderPlaced(order_id=f"o{number}")
                )

        for first in range(0, N, 20):  # 20 transactions at once
            await asyncio.gather(*(one(n) for n in range(first, first + 20)))

        async def handled() -> bool:
            async with db.transaction() as session:
                count = await session.scalar(select(func.count()).select_from(effects))
            return count == N - 1

        await eventually(handled, timeout=60, what=f"{N - 1} effects")
        await eventually(
            lambda: _dead_lettered(subscriber), what="the poison event's last delivery"
        )
    finally:
        for task in reversed(background):
            await task.stop()
    async with db.transaction() as session:
        rows, distinct = (
            await session.execute(select(func.count(), func.count(effects.c.order_id.distinct())))
        ).one()
        left = await session.scalar(select(func.count()).select_from(tables.outbox))
        inbox = await session.scalar(select(func.count()).select_from(tables.inbox))
    await db.dispose()
    assert (rows, distinct) == (N - 1, N - 1)
    assert left == 0
    assert inbox == N - 1  # the poison event's failed deliveries left no inbox row
    assert sum(r.sent for r in relays) >= N


async def _dead_lettered(subscriber: CatalogServiceSubscriber) -> bool:
    return [s["order_id"] for s in subscriber.seen].count("o7") >= 3


async def test_broker_killed_mid_burst_on_keel_data(
    nats_broker: Broker, keel_database_url: str
) -> None:
    """The outage proof on keel.data's databases (SQLite as services open it, PostgreSQL):
    publisher and subscriber share one database, as a service subscribing to itself would."""
    db = Database(keel_database_url, tables=both_metadata())
    async with db.transaction():
        pass
    try:
        await broker_outage(nats_broker, db, db, 150)
    finally:
        await db.dispose()


async def test_on_sqlite_the_relay_publishes_while_a_writer_holds_the_write_lock(
    nats_broker: Broker, tmp_path: Path
) -> None:
    """The relay reads the outbox in a read-only transaction, so it publishes while a producer
    is inside its write transaction, and deletes the sent rows when the producer is done."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/orders.sqlite3", tables=_metadata())
    await place(db, 0, 3)
    holding, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with db.transaction() as session:
            await session.execute(insert(orders).values(id="held", total=0))
            holding.set()
            await release.wait()

    relay = keel.events.Relay(db, settings=settings(nats_broker.url), publishes=[PLACED])
    held = asyncio.create_task(writer())
    nc = await nats.connect(nats_broker.url)
    try:
        await holding.wait()
        await relay.start()

        async def published() -> bool:
            info = await nc.jetstream().stream_info(PLACED.stream)
            return info.state.messages == 3

        await eventually(published, what="3 events in the stream while the writer waits")
        release.set()
        await held

        async def emptied() -> bool:
            async with db.transaction(readonly=True) as session:
                return await session.scalar(select(func.count()).select_from(tables.outbox)) == 0

        await eventually(emptied, what="the sent rows deleted")
    finally:
        release.set()
        await relay.stop()
        await nc.close()
        await db.dispose()
