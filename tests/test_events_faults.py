"""Faults the events runtime must survive, each on a real nats-server (and SQLite or a real
PostgreSQL): a handler's own constraint violation, a replayed letter failing again, a delivery
cut short at the last attempt, a database outage, hanging handlers and shutdowns, a broker
that refuses provisioning or comes back without its store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from itertools import count
from pathlib import Path
from typing import Any

import keel
import nats
from acme.orders.v1 import orders_pb2
from keel.data import Database
from keel.events import dead_letters, names
from keel.runtime.server import Background
from keel.testing.nats import Broker, eventually, nats_broker
from keel.testing.postgres import PostgresServer
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from tests.test_events_flow import running
from tests.test_events_proof import (
    PLACED,
    SERVICE,
    CatalogServiceSubscriber,
    effect_counts,
    effects,
    place,
    publisher_db,
    settings,
    sqlite,
    subscriber_db,
    subscriber_metadata,
)

__all__ = ["nats_broker", "publisher_db", "subscriber_db"]  # fixtures, for pytest

_databases = count()


@contextlib.asynccontextmanager
async def jetstream(url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def _letters(js: JetStreamContext) -> list[dead_letters.DeadLetter]:
    return await dead_letters.listing(js, SERVICE)


async def _effects_are(database: Any, wanted: int) -> None:
    async def reached() -> bool:
        return (await effect_counts(database))[0] >= wanted

    await eventually(reached, what=f"{wanted} effects")


class OneSeq(CatalogServiceSubscriber):
    """Writes every effect with the same primary key: the second event violates it."""

    async def on_order_placed(
        self, event: orders_pb2.OrderPlaced, context: keel.events.EventContext
    ) -> None:
        self.seen.append({"order_id": event.order_id, "context": context})
        await context.session.execute(
            insert(effects).values(seq=1, order_id=event.order_id, event_id=context.event_id)
        )


async def test_a_handlers_own_integrity_error_is_retried_then_dead_lettered(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database
) -> None:
    chosen = settings(nats_broker.url, events_max_deliver=2)
    subscriber = OneSeq()
    consumers = keel.events.Consumers(subscriber_db, [subscriber], settings=chosen)
    async with (
        running(keel.events.Relay(publisher_db, settings=chosen), consumers),
        jetstream(nats_broker.url) as js,
    ):
        await place(publisher_db, 0, 2)

        async def dead_lettered() -> bool:
            return len(await _letters(js)) == 1

        await eventually(dead_lettered, what="the violating event dead-lettered")
        [letter] = await _letters(js)
    assert "IntegrityError" in letter.error
    assert letter.deliveries == 2
    assert await effect_counts(subscriber_db) == (1, 1)


async def test_a_replayed_letter_that_fails_again_is_dead_lettered_again(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database
) -> None:
    chosen = settings(nats_broker.url, events_max_deliver=2)
    subscriber = CatalogServiceSubscriber(poison=frozenset({"o0"}))
    consumers = keel.events.Consumers(subscriber_db, [subscriber], settings=chosen)
    async with (
        running(keel.events.Relay(publisher_db, settings=chosen), consumers),
        jetstream(nats_broker.url) as js,
    ):
        await place(publisher_db, 0, 1)

        async def one_letter() -> bool:
            return len(await _letters(js)) == 1

        await eventually(one_letter, what="the first dead letter")
        [first] = await _letters(js)
        await dead_letters.replay(js, SERVICE, first)  # not fixed: it fails again

        async def again() -> bool:
            letters = await _letters(js)
            return len(letters) == 1 and letters[0].sequence != first.sequence

        await eventually(again, what="the replayed event dead-lettered again")
        [second] = await _letters(js)
    assert second.event_id == first.event_id
    assert second.error == "RuntimeError: cannot handle o0"


class Crashing(CatalogServiceSubscriber):
    """Fails the first delivery, then hangs in the second (a process about to be killed)."""

    def __init__(self) -> None:
        super().__init__()
        self.hanging = asyncio.Event()

    async def on_order_placed(
        self, event: orders_pb2.OrderPlaced, context: keel.events.EventContext
    ) -> None:
        self.seen.append({"order_id": event.order_id, "context": context})
        if context.delivery == 1:
            raise RuntimeError("first delivery fails")
        self.hanging.set()
        await asyncio.Event().wait()  # until stop cancels it


async def test_an_event_whose_last_delivery_is_cut_short_is_delivered_again(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database, tmp_path: Path
) -> None:
    """The process handling delivery KEEL_EVENTS_MAX_DELIVER dies: the broker delivers the
    event again (Keel, not the broker, decides when an event is dead)."""
    chosen = settings(nats_broker.url, events_max_deliver=2, events_ack_wait=1.0, grace_period=0.1)
    crashing = Crashing()
    # a database of its own: its hanging transaction would hold the write lock of SQLite
    # (a killed process's lock goes with it)
    elsewhere = await sqlite(tmp_path / "doomed.db", subscriber_metadata)
    doomed = keel.events.Consumers(elsewhere, [crashing], settings=chosen)
    healthy = keel.events.Consumers(subscriber_db, [CatalogServiceSubscriber()], settings=chosen)
    async with running(keel.events.Relay(publisher_db, settings=chosen)):
        await doomed.start()
        try:
            await place(publisher_db, 0, 1)
            await crashing.hanging.wait()  # in its last delivery
            assert doomed.nc is not None
            await doomed.nc.close()  # gone, as the broker sees it: no ack, no nak
            async with running(healthy):
                await _effects_are(subscriber_db, 1)
        finally:
            await doomed.stop()
            await elsewhere.dispose()
    assert await effect_counts(subscriber_db) == (1, 1)


class Proxy:
    """A TCP proxy to a database server: `cut()` drops every connection and refuses new
    ones (they are closed at once, and counted), `restore()` forwards again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cut_off = False
        self.refused = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            self.refused += 1
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    def cut(self) -> None:
        self.cut_off = True
        for writer in self._writers:
            writer.close()

    def restore(self) -> None:
        self.cut_off = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_a_database_outage_delays_events_and_dead_letters_none(
    nats_broker: Broker, publisher_db: Database, keel_postgres: PostgresServer
) -> None:
    url = make_url(await keel_postgres.create_database(f"outage_{os.getpid()}_{next(_databases)}"))
    proxy = Proxy(url.port or 5432)
    db = Database(url.set(port=await proxy.start()), tables=subscriber_metadata)
    chosen = settings(nats_broker.url, events_max_deliver=2)
    consumers = keel.events.Consumers(db, [CatalogServiceSubscriber()], settings=chosen)
    relay = keel.events.Relay(publisher_db, settings=chosen)
    try:
        async with db.transaction():  # creates the tables
            pass
        async with running(relay, consumers), jetstream(nats_broker.url) as js:
            await place(publisher_db, 0, 1)
            await _effects_are(db, 1)
            proxy.cut()
            await place(publisher_db, 1, 5)

            async def tried() -> bool:  # the consumer tried the database again and again
                return proxy.refused >= 8

            await eventually(tried, what="attempts on the database while it is away")
            proxy.restore()
            await _effects_are(db, 6)
            assert await _letters(js) == []
        assert await effect_counts(db) == (6, 6)
    finally:
        await proxy.close()
        await db.dispose()


class Hanging(CatalogServiceSubscriber):
    """Hangs in the first delivery of each event (until cancelled); handles the others."""

    async def on_order_placed(
        self, event: orders_pb2.OrderPlaced, context: keel.events.EventContext
    ) -> None:
        if context.delivery == 1:
            self.seen.append({"order_id": event.order_id, "context": context})
            await asyncio.Event().wait()
        await super().on_order_placed(event, context)


async def test_a_handler_past_its_deadline_fails_and_is_retried(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database
) -> None:
    chosen = settings(nats_broker.url, events_handler_timeout=0.2, events_ack_wait=60.0)
    consumers = keel.events.Consumers(subscriber_db, [Hanging()], settings=chosen)
    async with running(keel.events.Relay(publisher_db, settings=chosen), consumers):
        await place(publisher_db, 0, 2)
        await _effects_are(subscriber_db, 2)
    assert await effect_counts(subscriber_db) == (2, 2)


async def test_stop_cancels_hanging_handlers_and_returns_their_events(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database
) -> None:
    """Stop is bounded by the grace period; the events it cancelled are nak'ed, so another
    consumer has them at once, not after the ack wait."""
    chosen = settings(
        nats_broker.url, grace_period=0.2, events_handler_timeout=3000.0, events_ack_wait=3000.0
    )
    hanging = Hanging()
    stopped = keel.events.Consumers(subscriber_db, [hanging], settings=chosen)
    async with running(keel.events.Relay(publisher_db, settings=chosen)):
        await stopped.start()
        await place(publisher_db, 0, 3)

        async def all_hanging() -> bool:
            return len(hanging.seen) >= 1

        await eventually(all_hanging, what="a handler hanging")
        await asyncio.wait_for(stopped.stop(), 30)
        healthy = CatalogServiceSubscriber()
        async with running(keel.events.Consumers(subscriber_db, [healthy], settings=chosen)):
            await _effects_are(subscriber_db, 3)
    assert await effect_counts(subscriber_db) == (3, 3)
    cancelled = hanging.seen[0]["order_id"]
    assert [s["context"].delivery for s in healthy.seen if s["order_id"] == cancelled] == [2]


async def test_a_server_stops_every_background_task_though_one_fails_or_hangs() -> None:
    stopped: list[str] = []

    class Task:
        def __init__(self, name: str, how: str = "") -> None:
            self.name = name
            self.how = how

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            if self.how == "hang":
                await asyncio.Event().wait()
            stopped.append(self.name)
            if self.how == "fail":
                raise RuntimeError("cannot stop")

    background: list[Background] = [Task("a"), Task("hangs", "hang"), Task("fails", "fail")]
    server = keel.Server([], background=background, grace_period=0.2)
    await server.start()
    await asyncio.wait_for(server.stop(), 30)
    assert stopped == ["fails", "a"]


async def test_provisioning_that_fails_at_start_is_retried(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database
) -> None:
    """A stream that claims the events' subjects makes provisioning fail; once it is gone,
    the relay and the consumers provision and the events flow."""
    chosen = settings(nats_broker.url, events_start_wait=0.1, events_max_backoff=0.5)
    relay = keel.events.Relay(publisher_db, settings=chosen, publishes=[PLACED])
    consumers = keel.events.Consumers(subscriber_db, [CatalogServiceSubscriber()], settings=chosen)
    async with jetstream(nats_broker.url) as js:
        await js.add_stream(StreamConfig(name="SQUATTER", subjects=[f"{PLACED.package}.>"]))
        async with running(relay, consumers):
            await place(publisher_db, 0, 3)
            await js.delete_stream("SQUATTER")
            await _effects_are(subscriber_db, 3)
    assert await effect_counts(subscriber_db) == (3, 3)


async def test_a_broker_back_without_its_store_is_provisioned_again(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database
) -> None:
    chosen = settings(nats_broker.url, events_max_backoff=0.5)
    relay = keel.events.Relay(publisher_db, settings=chosen, publishes=[PLACED])
    consumers = keel.events.Consumers(subscriber_db, [CatalogServiceSubscriber()], settings=chosen)
    async with running(relay, consumers):
        await place(publisher_db, 0, 2)
        await _effects_are(subscriber_db, 2)
        nats_broker.kill()
        shutil.rmtree(nats_broker.store_dir / "jetstream")
        nats_broker.restart()
        await place(publisher_db, 2, 3)
        await _effects_are(subscriber_db, 5)
    assert await effect_counts(subscriber_db) == (5, 5)


async def test_the_relay_provisions_again_when_the_broker_is_back_without_its_store(
    nats_broker: Broker, publisher_db: Database
) -> None:
    chosen = settings(nats_broker.url, events_max_backoff=0.5)
    relay = keel.events.Relay(publisher_db, settings=chosen, publishes=[PLACED])
    async with running(relay):
        await place(publisher_db, 0, 1)
        await eventually(lambda: _stored(nats_broker.url, 1), what="the first event stored")
        nats_broker.kill()
        shutil.rmtree(nats_broker.store_dir / "jetstream")
        nats_broker.restart()
        await place(publisher_db, 1, 2)
        await eventually(lambda: _stored(nats_broker.url, 2), what="the stream made again")


async def _stored(url: str, wanted: int) -> bool:
    async with jetstream(url) as js:
        try:
            info = await js.stream_info(PLACED.stream)
        except nats.js.errors.NotFoundError:
            return False
        return info.state.messages == wanted


class Shipping(CatalogServiceSubscriber):
    """Another service subscribing to the same subject."""

    __keel_subscriber__ = keel.events.SubscriberSpec(
        service="acme.shipping.v1.ShippingService",
        handlers=(keel.events.Handler(PLACED, "on_order_placed"),),
    )


async def test_a_replay_goes_to_the_consumer_that_dead_lettered_it_only(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database
) -> None:
    chosen = settings(nats_broker.url, events_max_deliver=1)
    catalog = CatalogServiceSubscriber(poison=frozenset({"o0"}))
    shipping = Shipping()
    consumers = keel.events.Consumers(subscriber_db, [catalog, shipping], settings=chosen)
    async with (
        running(keel.events.Relay(publisher_db, settings=chosen), consumers),
        jetstream(nats_broker.url) as js,
    ):
        await place(publisher_db, 0, 1)

        async def dead_lettered() -> bool:
            return len(await _letters(js)) == 1

        await eventually(dead_lettered, what="catalog's dead letter")
        catalog.poison = frozenset()
        [letter] = await _letters(js)
        await dead_letters.replay(js, SERVICE, letter)
        await _effects_are(subscriber_db, 2)  # shipping's, then catalog's on the replay
        durable = names.durable(shipping.__keel_subscriber__.service, PLACED.subject)
        info = await js.consumer_info(PLACED.stream, durable)
    assert info.delivered.consumer_seq == 1  # shipping never saw the replay
    assert [s["order_id"] for s in shipping.seen] == ["o0"]
