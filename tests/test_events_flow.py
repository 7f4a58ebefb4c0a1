"""Events end to end in one process, on a real nats-server and SQLite: tracing and correlation,
redelivery after the duplicate window, dead letters and their replay, provisioning, servers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import keel
import nats
import prometheus_client
import pytest
from acme.orders.v1 import orders_pb2
from keel.data import Database
from keel.events import carry, dlq, names, tables
from keel.events.ids import millis_of, new_event_id
from keel.runtime import propagation
from keel.runtime.config import ConfigError, Settings
from keel.runtime.server import Background
from keel.testing.nats import Broker, eventually, nats_broker
from sqlalchemy import func, select

from tests.test_events_proof import (
    PLACED,
    SERVICE,
    CatalogServiceSubscriber,
    OrderServicePublisher,
    effect_counts,
    place,
    publisher_db,
    settings,
    subscriber_db,
)

__all__ = ["nats_broker", "publisher_db", "subscriber_db"]  # fixtures, for pytest


@contextlib.asynccontextmanager
async def running(*tasks: Any) -> AsyncIterator[None]:
    for task in tasks:
        await task.start()
    try:
        yield
    finally:
        for task in reversed(tasks):
            await task.stop()


async def _effects_are(database: Database, count: int) -> None:
    async def reached() -> bool:
        return (await effect_counts(database))[0] >= count

    await eventually(reached, what=f"{count} effects")


def test_event_ids_sort_by_creation_and_never_repeat() -> None:
    ids = [new_event_id() for _ in range(10_000)]  # many share a millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 30 and i.startswith("evt_") for i in ids)
    assert millis_of(ids[-1]) >= millis_of(ids[0]) > 1_700_000_000_000


def test_event_settings_from_the_environment() -> None:
    chosen = Settings.from_env(
        {
            "KEEL_EVENTS_BACKOFF": "0.5, 2",
            "KEEL_EVENTS_MAX_DELIVER": "7",
            "KEEL_EVENTS_DUPLICATE_WINDOW": "600",
            "KEEL_EVENTS_KEEP_SENT": "0",
        }
    )
    assert chosen.events_backoff == (0.5, 2.0)
    assert chosen.events_max_deliver == 7
    assert chosen.events_duplicate_window == 600
    assert Settings().events_ack_wait == 30
    for bad in ({"KEEL_EVENTS_BACKOFF": "soon"}, {"KEEL_EVENTS_MAX_DELIVER": "0"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Settings.from_env(bad)


async def test_correlation_id_and_trace_travel_from_publisher_to_handler(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database, spans: Any
) -> None:
    chosen = settings(nats_broker.url)
    subscriber = CatalogServiceSubscriber()
    consumers = keel.events.Consumers(subscriber_db, [subscriber], settings=chosen)

    async def handled_call() -> int:  # a call being handled publishes: its own task
        tracer = keel.runtime.tracing.tracer()
        assert tracer is not None
        with tracer.start_as_current_span("acme.orders.v1.OrderService/CreateOrder") as span:
            propagation.bind(SERVICE, _Call(), [("x-request-id", "corr-42")])
            async with publisher_db.transaction() as session:
                await OrderServicePublisher(session).order_placed(
                    orders_pb2.OrderPlaced(order_id="o1")
                )
            return span.get_span_context().trace_id

    async with running(keel.events.Relay(publisher_db, settings=chosen), consumers):
        trace_id = await asyncio.create_task(handled_call())
        await _effects_are(subscriber_db, 1)
    [seen] = subscriber.seen
    assert seen["context"].correlation_id == "corr-42"
    assert seen["logged_correlation_id"] == "corr-42"  # what log lines carry
    assert seen["trace_id"] == trace_id
    by_name = {span.name: span for span in spans.get_finished_spans()}
    produced = by_name[f"{PLACED.subject} publish"]
    consumed = by_name[f"{PLACED.subject} process"]
    assert consumed.context.trace_id == trace_id
    assert consumed.parent.span_id == produced.context.span_id
    assert consumed.kind.name == "CONSUMER"


@pytest.mark.parametrize("keep_sent", [0.0, 3600.0])
async def test_relaying_and_handling_events_leave_no_statement_cycles(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database, keep_sent: float
) -> None:
    chosen = settings(nats_broker.url, events_keep_sent=keep_sent)
    consumers = keel.events.Consumers(subscriber_db, [CatalogServiceSubscriber()], settings=chosen)
    async with running(keel.events.Relay(publisher_db, settings=chosen), consumers):
        await place(publisher_db, 1, 1)
        await _effects_are(subscriber_db, 1)
        flags = gc.get_debug()
        gc.collect()
        gc.garbage.clear()
        gc.set_debug(gc.DEBUG_SAVEALL)  # everything a collection finds unreachable is kept
        try:
            for number in range(2, 12):  # one at a time: a batch of one event each
                await place(publisher_db, number, 1)
                await _effects_are(subscriber_db, number)
            gc.collect()
            cycles = [type(o).__name__ for o in gc.garbage if type(o).__module__.startswith("sql")]
        finally:
            gc.set_debug(flags)
            gc.garbage.clear()
    # (a statement built per batch with in_(ids) leaves its bound parameters in a cycle)
    assert cycles == []


class _Call:
    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> Any:
        return ()


async def test_redelivery_after_the_duplicate_window_has_no_second_effect(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database
) -> None:
    chosen = settings(nats_broker.url, events_duplicate_window=0.2)
    subscriber = CatalogServiceSubscriber()
    consumers = keel.events.Consumers(subscriber_db, [subscriber], settings=chosen)
    async with running(keel.events.Relay(publisher_db, settings=chosen), consumers):
        await place(publisher_db, 0, 1)
        await _effects_are(subscriber_db, 1)
        [seen] = subscriber.seen
        event_id = seen["context"].event_id
        nc = await nats.connect(nats_broker.url)
        js = nc.jetstream()
        headers = {carry.MSG_ID: event_id, carry.EVENT_ID: event_id}
        payload = orders_pb2.OrderPlaced(order_id="o0").SerializeToString()
        acks = []

        async def stored_again() -> bool:  # the broker drops it as a duplicate until the window
            acks.append(await js.publish(PLACED.subject, payload, headers=dict(headers)))
            return not acks[-1].duplicate

        await eventually(stored_again, what="the duplicate window to pass")
        durable = names.durable(SERVICE, PLACED.subject)

        async def acked() -> bool:
            info = await js.consumer_info(PLACED.stream, durable)
            return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= acks[-1].seq

        await eventually(acked, what="the redelivered event acked")
        await nc.close()
    assert await effect_counts(subscriber_db) == (1, 1)
    assert len(subscriber.seen) == 1  # skipped by its inbox row, before the handler


async def test_a_poison_event_is_dead_lettered_while_others_flow_and_can_be_replayed(
    nats_broker: Broker,
    publisher_db: Database,
    subscriber_db: Database,
    capsys: pytest.CaptureFixture[str],
) -> None:
    chosen = settings(nats_broker.url, events_max_deliver=3)
    before = _counts()
    subscriber = CatalogServiceSubscriber(poison=frozenset({"o3"}))
    consumers = keel.events.Consumers(subscriber_db, [subscriber], settings=chosen)
    async with running(keel.events.Relay(publisher_db, settings=chosen), consumers):
        await place(publisher_db, 0, 10)
        await _effects_are(subscriber_db, 9)
        nc = await nats.connect(nats_broker.url)
        js = nc.jetstream()

        async def dead_lettered() -> bool:
            return (await js.stream_info(names.dlq_stream(SERVICE))).state.messages == 1

        await eventually(dead_lettered, what="a dead letter")
        letter = await js.get_last_msg(
            names.dlq_stream(SERVICE), names.dlq_subject(SERVICE, PLACED.subject)
        )
        assert letter.headers is not None
        assert letter.headers[carry.DELIVERIES] == "3"
        assert letter.headers[carry.ERROR] == "RuntimeError: cannot handle o3"
        assert letter.headers[carry.SUBJECT] == PLACED.subject
        assert [s["order_id"] for s in subscriber.seen].count("o3") >= 3  # + batch runs
        counted = {name: _counts()[name] - before[name] for name in before}
        assert (counted["published"], counted["acked"], counted["dead_lettered"]) == (10, 9, 1)
        assert counted["redelivered"] >= 2  # o3's (and any neighbour redelivered with it)
        assert counted["delivered"] >= 12  # o3 three times

        async def outbox_empty() -> bool:
            return (
                _sample("keel_events_outbox_pending")
                == _sample("keel_events_outbox_lag_seconds")
                == 0
            )

        await eventually(outbox_empty, what="an empty outbox reported")

        assert await _cli(nats_broker.url, SERVICE) == 0
        listed = [x for x in capsys.readouterr().out.splitlines() if x.startswith("evt_")]
        assert len(listed) == 1
        assert "deliveries=3" in listed[0]
        assert "cannot handle o3" in listed[0]
        event_id = listed[0].split("\t")[0]

        subscriber.poison = frozenset()  # fixed: replay it
        assert await _cli(nats_broker.url, SERVICE, "--replay", "evt_UNKNOWN") == 1
        assert await _cli(nats_broker.url, SERVICE, "--replay", event_id) == 0
        await _effects_are(subscriber_db, 10)
        assert (await js.stream_info(names.dlq_stream(SERVICE))).state.messages == 0
        await nc.close()
    assert await effect_counts(subscriber_db) == (10, 10)


def _sample(name: str, **labels: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _counts() -> dict[str, float]:
    """The event counters of PLACED's subject, as Prometheus reports them."""
    names = ("published", "delivered", "redelivered", "acked", "dead_lettered")
    return {n: _sample(f"keel_events_{n}_total", subject=PLACED.subject) for n in names}


async def _cli(url: str, *arguments: str) -> int:
    """`keel events dlq ...` as cli.py registers it (run in a thread: it has its own loop)."""
    parser = argparse.ArgumentParser(prog="keel")
    dlq.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["events", "dlq", *arguments, "--nats-url", url])
    code: int = await asyncio.to_thread(args.run, args)
    return code


async def test_an_undecodable_payload_is_dead_lettered_at_once(
    nats_broker: Broker, subscriber_db: Database
) -> None:
    chosen = settings(nats_broker.url, events_max_deliver=5)
    subscriber = CatalogServiceSubscriber()
    consumers = keel.events.Consumers(subscriber_db, [subscriber], settings=chosen)
    async with running(consumers):
        nc = await nats.connect(nats_broker.url)
        js = nc.jetstream()
        await js.publish(PLACED.subject, b"\xff\xff\xff", headers={carry.EVENT_ID: "evt_BAD"})

        async def dead_lettered() -> bool:
            return (await js.stream_info(names.dlq_stream(SERVICE))).state.messages == 1

        await eventually(dead_lettered, what="a dead letter")
        letter = await js.get_last_msg(
            names.dlq_stream(SERVICE), names.dlq_subject(SERVICE, PLACED.subject)
        )
        await nc.close()
    assert letter.headers is not None
    assert letter.headers[carry.DELIVERIES] == "1"
    assert letter.headers[carry.ERROR].startswith(
        "undecodable payload: not acme.orders.v1.OrderPlaced"
    )
    assert subscriber.seen == []


async def test_provisioning_is_idempotent_and_follows_settings(
    nats_broker: Broker, subscriber_db: Database
) -> None:
    for max_deliver in (3, 3, 4):
        chosen = settings(nats_broker.url, events_max_deliver=max_deliver)
        consumers = keel.events.Consumers(
            subscriber_db, [CatalogServiceSubscriber()], settings=chosen
        )
        async with running(consumers):
            pass
    nc = await nats.connect(nats_broker.url)
    js = nc.jetstream()
    stream = await js.stream_info(PLACED.stream)
    replay = names.replay_subject(SERVICE, PLACED.subject)
    cancelled = names.replay_subject(SERVICE, "acme.orders.v1.order.cancelled")
    assert stream.config.subjects == ["acme.orders.v1.>", replay, cancelled]
    assert stream.config.duplicate_window == 120
    assert stream.config.max_age == 604800  # KEEL_EVENTS_MAX_AGE
    info = await js.consumer_info(PLACED.stream, names.durable(SERVICE, PLACED.subject))
    assert info.config.max_deliver == -1  # Keel dead-letters, not the broker
    assert info.config.ack_wait == 2
    assert info.config.filter_subjects == [PLACED.subject, replay]
    dead = await js.stream_info(names.dlq_stream(SERVICE))
    assert dead.config.subjects == [f"keel.dlq.{SERVICE}.>"]
    assert dead.config.max_age == 604800
    assert len(await js.streams_info()) == 2
    await nc.close()


async def test_a_commit_wakes_the_relay_and_sent_rows_can_be_kept(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database
) -> None:
    chosen = settings(nats_broker.url, events_poll_interval=3600.0, events_keep_sent=3600.0)
    relay = keel.events.Relay(publisher_db, settings=chosen)
    consumers = keel.events.Consumers(subscriber_db, [CatalogServiceSubscriber()], settings=chosen)
    async with running(relay, consumers):

        async def first_pass_done() -> bool:  # found nothing: now it waits an hour, or a commit
            return relay.passes >= 1

        await eventually(first_pass_done, what="the relay's first pass")
        await place(publisher_db, 0, 3)
        await _effects_are(subscriber_db, 3)
    async with publisher_db.transaction(readonly=True) as session:
        sent = await session.scalar(
            select(func.count()).where(tables.outbox.c.sent_at.is_not(None))
        )
    assert sent == 3


async def test_a_server_starts_and_stops_its_background_tasks_in_order(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database
) -> None:
    order: list[str] = []

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        async def start(self) -> None:
            order.append(f"start {self.name}")

        async def stop(self) -> None:
            order.append(f"stop {self.name}")

    chosen = settings(nats_broker.url)
    relay = keel.events.Relay(publisher_db, settings=chosen)
    consumers = keel.events.Consumers(subscriber_db, [CatalogServiceSubscriber()], settings=chosen)
    background: list[Background] = [Recorder("a"), relay, consumers, Recorder("b")]
    async with keel.Server([], background=background):
        await place(publisher_db, 0, 5)
        await _effects_are(subscriber_db, 5)
    assert order == ["start a", "start b", "stop b", "stop a"]
    assert consumers.nc is None
    assert relay.sent == 5


def test_the_broker_restarts_on_its_port_and_store(tmp_path: Path) -> None:
    broker = keel.events.start_broker(tmp_path / "nats")
    try:
        port = broker.port
        broker.kill()
        broker.restart()
        assert broker.port == port
        assert broker.url == f"nats://127.0.0.1:{port}"
        assert (tmp_path / "nats" / "jetstream").is_dir()
    finally:
        broker.stop()
    assert broker.process is None


def test_the_log_of_a_broker_that_cannot_start_is_reported(tmp_path: Path) -> None:
    first = keel.events.start_broker(tmp_path / "one")
    try:
        with pytest.raises(keel.events.broker.BrokerError, match="nats-server"):
            keel.events.start_broker(tmp_path / "two", port=first.port)
    finally:
        first.stop()


async def test_a_service_starts_without_its_broker_and_catches_up(
    tmp_path: Path, publisher_db: Database, subscriber_db: Database
) -> None:
    broker = keel.events.broker.Broker(tmp_path / "late")  # not started yet
    chosen = settings(broker.url, events_start_wait=0.1)
    relay = keel.events.Relay(publisher_db, settings=chosen, publishes=[PLACED])
    consumers = keel.events.Consumers(subscriber_db, [CatalogServiceSubscriber()], settings=chosen)
    try:
        async with running(relay, consumers):  # start returns: the outbox keeps the events
            await place(publisher_db, 0, 5)
            broker.start()
            await _effects_are(subscriber_db, 5)
    finally:
        broker.stop()
    assert await effect_counts(subscriber_db) == (5, 5)


async def test_no_broker_url_is_an_error_at_start(publisher_db: Database) -> None:
    relay = keel.events.Relay(publisher_db, settings=Settings())
    with pytest.raises(ValueError, match="KEEL_NATS_URL"):
        await relay.start()
    await relay.stop()


async def test_a_batch_slower_than_the_ack_wait_is_not_delivered_again(
    nats_broker: Broker, publisher_db: Database, subscriber_db: Database
) -> None:
    chosen = settings(nats_broker.url, events_ack_wait=0.6)
    release = asyncio.Event()

    class Slow(CatalogServiceSubscriber):
        async def on_order_placed(
            self, event: orders_pb2.OrderPlaced, context: keel.events.EventContext
        ) -> None:
            await release.wait()  # slow work: longer than the ack wait (see below)
            await super().on_order_placed(event, context)

    workers = [Slow(), Slow()]  # two processes' consumers on one durable consumer
    consumers = [
        keel.events.Consumers(subscriber_db, [worker], settings=chosen) for worker in workers
    ]
    async with running(keel.events.Relay(publisher_db, settings=chosen), *consumers):
        await place(publisher_db, 0, 3)

        async def past_the_ack_wait() -> bool:  # three beats: 1.5 ack waits into the batch
            return any(loop.beats >= 3 for each in consumers for loop in each._loops)

        await eventually(past_the_ack_wait, what="a batch handled longer than the ack wait")
        release.set()
        await _effects_are(subscriber_db, 3)
        nc = await nats.connect(nats_broker.url)
        info = await nc.jetstream().consumer_info(
            PLACED.stream, names.durable(SERVICE, PLACED.subject)
        )
        await nc.close()
    assert info.delivered.consumer_seq == 3  # no delivery but the first of each event
    runs = [s["context"].delivery for worker in workers for s in worker.seen]
    assert runs == [1, 1, 1]


def test_a_services_event_tasks_come_from_its_declarations(tmp_path: Path) -> None:
    from acme.catalog.v1 import catalog_keel  # noqa: PLC0415
    from acme.orders.v1 import orders_keel  # noqa: PLC0415

    class Sold(catalog_keel.CatalogServiceSubscriber):
        async def on_order_placed(self, event: Any, context: Any) -> None: ...

        async def on_order_cancelled(self, event: Any, context: Any) -> None: ...

    db = Database(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite3")
    publishers = [orders_keel.OrderServicePublisher]
    declared = (orders_keel.ORDER_PLACED, orders_keel.ORDER_CANCELLED)
    assert orders_keel.OrderServicePublisher.__keel_publishes__ == declared
    url = "nats://127.0.0.1:4222"
    relay, consumers = keel.events.background(
        db, publishers=publishers, subscribers=[Sold()], settings=Settings(nats_url=url)
    )
    assert isinstance(relay, keel.events.Relay)
    assert relay.publishes == declared
    assert isinstance(consumers, keel.events.Consumers)
    assert keel.events.background(db, publishers=publishers, settings=Settings()) == []
