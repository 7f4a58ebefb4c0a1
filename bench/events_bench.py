"""Events end to end: Keel's outbox, relay and inbox vs raw nats-py JetStream, in one run.

Keel: producers commit a state change with an event through the outbox (keel.data's SQLite:
WAL, BEGIN IMMEDIATE); the relay publishes it to JetStream; a subscriber handles it, committing
its effect with the inbox row.
Raw: the same producers publish to JetStream awaiting each ack; a pull consumer fetches and
acks. Both: one nats-server with file storage, the same producer concurrency, publisher and
subscriber in this process; rounds alternate raw and keel, and the median round is reported.
Latency is commit (raw: publish) to handled (keel: the handler's transaction committed; raw:
acked). Durability is alike: JetStream writes each message to its file before acking and
fsyncs later (its default); SQLite in WAL mode with synchronous=NORMAL writes each commit and
fsyncs at checkpoints. Neither survives power loss of the last moments; both survive a crash.

`raw+db` is raw JetStream plus the same database work (the state change committed before
the publish, the effects committed before the acks) without outbox or inbox: what Keel adds
to a service that writes a database anyway. Two more rows say where the time goes: `commit`
is the producers' transactions alone (the state change without an event: what the service
pays anyway), `drain` is the events runtime alone (the outbox filled first, then relay,
broker and inbox empty it).

Target: keel >= 0.5x raw events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keel
import nats
from google.protobuf import wrappers_pb2
from keel.data import Database
from keel.events import tables
from keel.events.broker import start_broker
from keel.runtime.config import Settings
from keel.runtime.server import run
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy import event as sa_event

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "events"
SPEC = keel.events.EventSpec(
    subject="bench.v1.thing.done",
    message=wrappers_pb2.StringValue,
    stream="BENCH_V1",
    name="bench.v1.StringValue",
)

state_metadata = MetaData()
things = Table("things", state_metadata, Column("id", String(40), primary_key=True))
tables.add_to(state_metadata)
effect_metadata = MetaData()
effects = Table(
    "effects",
    effect_metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("thing", String(40), nullable=False),
)
tables.add_to(effect_metadata)


@dataclass
class Row:
    mode: str
    events_per_s: float
    p50_ms: float
    p99_ms: float


class ThingPublisher(keel.events.Publisher):
    async def thing_done(self, event: wrappers_pb2.StringValue) -> str:
        return await self._publish(SPEC, event)


class Counter(keel.events.Subscriber):
    __keel_subscriber__ = keel.events.SubscriberSpec(
        service="bench.v1.CounterService", handlers=(keel.events.Handler(SPEC, "on_thing_done"),)
    )

    def __init__(self, handled: Callable[[str], None]) -> None:
        self.handled = handled

    async def on_thing_done(
        self, event: wrappers_pb2.StringValue, context: keel.events.EventContext
    ) -> None:
        await context.session.execute(insert(effects).values(thing=event.value))
        name = event.value
        sa_event.listen(
            context.session.sync_session, "after_commit", lambda _: self.handled(name), once=True
        )


async def _sqlite(path: Path, metadata: MetaData) -> Database:
    """A service database as keel.data makes it (SQLite: WAL, synchronous=NORMAL, BEGIN
    IMMEDIATE), its tables created."""
    database = Database(f"sqlite+aiosqlite:///{path}", tables=metadata)
    async with database.transaction():
        pass
    return database


def _row(mode: str, started: float, begun: dict[str, float], done: dict[str, float]) -> Row:
    latencies = sorted((done[k] - begun[k]) * 1000 for k in done)
    elapsed = max(done.values()) - started
    return Row(
        mode,
        len(done) / elapsed,
        latencies[len(latencies) // 2],
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    )


async def _produce(count: int, producers: int, one: Callable[[str], Any]) -> None:
    queue = iter(range(count))

    async def producer() -> None:
        for number in queue:
            await one(f"t{number}")

    await asyncio.gather(*(producer() for _ in range(producers)))


async def commit_round(folder: Path, count: int, producers: int) -> Row:
    database = await _sqlite(folder / "commit.db", state_metadata)
    begun: dict[str, float] = {}
    done: dict[str, float] = {}

    async def one(name: str) -> None:
        begun[name] = time.perf_counter()
        async with database.transaction() as session:
            await session.execute(insert(things).values(id=name))
        done[name] = time.perf_counter()

    started = time.perf_counter()
    await _produce(count, producers, one)
    await database.dispose()
    return _row("commit", started, begun, done)


async def keel_round(
    url: str, folder: Path, count: int, producers: int, *, drain: bool = False
) -> Row:
    state = await _sqlite(folder / f"state{drain}.db", state_metadata)
    counter_db = await _sqlite(folder / f"effects{drain}.db", effect_metadata)
    settings = Settings(nats_url=url)
    begun: dict[str, float] = {}
    done: dict[str, float] = {}
    finished = asyncio.Event()

    def handled(name: str) -> None:
        done[name] = time.perf_counter()
        if len(done) == count:
            finished.set()

    relay = keel.events.Relay(state, settings=settings, publishes=[SPEC])
    consumers = keel.events.Consumers(counter_db, [Counter(handled)], settings=settings)

    async def one(name: str) -> None:
        async with state.transaction() as session:
            await session.execute(insert(things).values(id=name))
            await ThingPublisher(session).thing_done(wrappers_pb2.StringValue(value=name))
        begun[name] = time.perf_counter()  # committed

    if drain:
        await _produce(count, producers, one)
        started = time.perf_counter()
        begun = dict.fromkeys(begun, started)
    await relay.start()
    await consumers.start()
    if not drain:
        started = time.perf_counter()
        await _produce(count, producers, one)
    await finished.wait()
    row = _row("drain" if drain else "keel", started, begun, done)
    await consumers.stop()
    await relay.stop()
    await state.dispose()
    await counter_db.dispose()
    return row


async def raw_round(
    url: str, count: int, producers: int, stream: str, folder: Path | None = None
) -> Row:
    """Raw JetStream; with `folder`, also the same database work as keel's round (the state
    change committed before the publish, the batch's effects committed before the acks), but
    no outbox and no inbox."""
    state = effect_db = None
    if folder is not None:
        state = await _sqlite(folder / "raw-state.db", state_metadata)
        effect_db = await _sqlite(folder / "raw-effects.db", effect_metadata)
    nc = await nats.connect(url)
    js = nc.jetstream()
    subject = f"{stream.lower()}.thing"
    await js.add_stream(StreamConfig(name=stream, subjects=[subject], storage=StorageType.FILE))
    await js.add_consumer(
        stream, ConsumerConfig(durable_name="counter", ack_policy=AckPolicy.EXPLICIT)
    )
    sub = await js.pull_subscribe_bind("counter", stream)
    begun: dict[str, float] = {}
    done: dict[str, float] = {}

    async def consume() -> None:
        while len(done) < count:
            try:
                messages = await sub.fetch(100, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            if effect_db is not None:
                async with effect_db.transaction() as session:
                    for message in messages:
                        await session.execute(insert(effects).values(thing=message.data.decode()))
            for message in messages:
                await message.ack()
                done[message.data.decode()] = time.perf_counter()

    async def one(name: str) -> None:
        if state is not None:
            async with state.transaction() as session:
                await session.execute(insert(things).values(id=name))
        begun[name] = time.perf_counter()
        await js.publish(subject, name.encode())

    consumer = asyncio.create_task(consume())
    started = time.perf_counter()
    await _produce(count, producers, one)
    await consumer
    row = _row("raw" if folder is None else "raw+db", started, begun, done)
    for database in (state, effect_db):
        if database is not None:
            await database.dispose()
    await js.delete_stream(stream)
    await nc.close()
    return row


async def main_async(count: int, rounds: int, producers: int) -> list[Row]:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    broker = start_broker(WORK / "nats")
    rows: list[Row] = []
    try:
        for number in range(rounds):
            rows.append(await raw_round(broker.url, count, producers, f"RAW{number}"))
            folder = WORK / f"keel{number}"
            folder.mkdir()
            rows.append(await raw_round(broker.url, count, producers, f"RAWDB{number}", folder))
            rows.append(await keel_round(broker.url, folder, count, producers))
            rows.append(await keel_round(broker.url, folder, count, producers, drain=True))
            rows.append(await commit_round(folder, count, producers))
    finally:
        broker.stop()
    return rows


def _median(rows: list[Row], mode: str) -> Row:
    chosen = [r for r in rows if r.mode == mode]
    return sorted(chosen, key=lambda r: r.events_per_s)[len(chosen) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--producers", type=int, default=16)
    args = parser.parse_args()
    keel.runtime.logs.configure("warning")
    rows = run(main_async(args.events, args.rounds, args.producers))  # on uvloop, as servers
    print(
        f"events end to end: {args.events} events x {args.rounds} rounds,"
        f" {args.producers} producers"
    )
    print(f"{'mode':<6} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}   (every round)")
    for row in rows:
        print(f"{row.mode:<6} {row.events_per_s:>10.0f} {row.p50_ms:>8.1f} {row.p99_ms:>8.1f}")
    raw, ours = _median(rows, "raw"), _median(rows, "keel")
    print(f"median: raw {raw.events_per_s:.0f}/s, keel {ours.events_per_s:.0f}/s")
    print(f"ratio keel/raw events/s: {ours.events_per_s / raw.events_per_s:.2f}x (target >= 0.5x)")
    print(
        f"commit-to-handled p50/p99: keel {ours.p50_ms:.1f}/{ours.p99_ms:.1f} ms,"
        f" raw {raw.p50_ms:.1f}/{raw.p99_ms:.1f} ms"
    )
    commit, drain = _median(rows, "commit"), _median(rows, "drain")
    with_db = _median(rows, "raw+db")
    print(
        f"with the same database work: raw+db {with_db.events_per_s:.0f}/s,"
        f" keel/raw+db {ours.events_per_s / with_db.events_per_s:.2f}x"
    )
    print(
        f"where the time goes: the producers' commits alone {commit.events_per_s:.0f}/s;"
        f" relay + broker + inbox alone (outbox drain) {drain.events_per_s:.0f}/s"
        f" ({drain.events_per_s / raw.events_per_s:.2f}x raw)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
