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
import contextlib
import math
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
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
from keel.testing.postgres import PostgresMissingError, PostgresServer
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, text
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

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
    db: str
    events_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_us: float = 0.0
    """The event loop thread's CPU time per event (time.thread_time)."""


_NO_LATENCY = float("nan")  # a stage alone: its events were all there at its start


class ThingPublisher(keel.events.Publisher):
    async def thing_done(self, event: wrappers_pb2.StringValue) -> str:
        return await self._publish(SPEC, event)


class Counter(keel.events.Subscriber):
    __keel_subscriber__ = keel.events.SubscriberSpec(
        service="bench.v1.CounterService", handlers=(keel.events.Handler(SPEC, "on_thing_done"),)
    )

    async def on_thing_done(
        self, event: wrappers_pb2.StringValue, context: keel.events.EventContext
    ) -> None:
        await context.session.execute(insert(effects).values(thing=event.value))
        context.session.sync_session.info.setdefault(_HANDLED, []).append(event.value)


_HANDLED = "bench_handled"
_on_handled: list[Callable[[str], None]] = []


def _committed(session: Session) -> None:
    """The handler's names, once its transaction committed (the time a name was handled)."""
    for name in session.info.pop(_HANDLED, ()):
        for handled in _on_handled:
            handled(name)


sa_event.listen(Session, "after_commit", _committed)
sa_event.listen(Session, "after_rollback", lambda session: session.info.pop(_HANDLED, None))

Databases = Callable[[str, MetaData], Awaitable[Database]]


def sqlite_databases(folder: Path) -> Databases:
    """Service databases as keel.data makes them by default: SQLite files (WAL,
    synchronous=NORMAL, BEGIN IMMEDIATE, write transactions taking turns), tables created."""

    async def make(name: str, metadata: MetaData) -> Database:
        database = Database(f"sqlite+aiosqlite:///{folder / name}.db", tables=metadata)
        async with database.transaction():
            pass
        return database

    return make


def postgres_databases(server: Any) -> Databases:
    """Databases on a keel.testing PostgreSQL, with SQLite's and JetStream's durability: each
    commit written to the OS before it returns (synchronous_commit=on), fsynced later
    (the server runs with fsync=off)."""

    async def make(name: str, metadata: MetaData) -> Database:
        url = await server.create_database(name)
        setup = Database(url)
        async with setup.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(f"ALTER DATABASE {name} SET synchronous_commit = on"))
        await setup.dispose()
        database = Database(url, tables=metadata)
        async with database.transaction():
            pass
        return database

    return make


def _row(
    mode: str,
    db: str,
    started: tuple[float, float],
    done: dict[str, float],
    begun: dict[str, float] | None = None,
) -> Row:
    """The row of a round that `started` (perf_counter, thread_time) and handled `done` (name:
    when); with `begun` (name: when committed), its latencies."""
    elapsed = max(done.values()) - started[0]
    cpu = (time.thread_time() - started[1]) * 1e6 / len(done)
    if begun is None:
        return Row(mode, db, len(done) / elapsed, _NO_LATENCY, _NO_LATENCY, cpu)
    latencies = sorted((done[k] - begun[k]) * 1000 for k in done)
    return Row(
        mode,
        db,
        len(done) / elapsed,
        latencies[len(latencies) // 2],
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        cpu,
    )


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


async def _produce(count: int, producers: int, one: Callable[[str], Any]) -> None:
    queue = iter(range(count))

    async def producer() -> None:
        for number in queue:
            await one(f"t{number}")

    await asyncio.gather(*(producer() for _ in range(producers)))


async def commit_round(make: Databases, tag: str, db: str, count: int, producers: int) -> Row:
    """The producers' transactions alone: the state change without an event."""
    database = await make(f"commit_{tag}", state_metadata)
    begun: dict[str, float] = {}
    done: dict[str, float] = {}

    async def one(name: str) -> None:
        begun[name] = time.perf_counter()
        async with database.transaction() as session:
            await session.execute(insert(things).values(id=name))
        done[name] = time.perf_counter()

    started = _clocks()
    await _produce(count, producers, one)
    await database.dispose()
    return _row("commit", db, started, done, begun)


class _Keel:
    """A producing service's database and relay, a subscribing service's database and
    consumers, and when each event was committed and handled."""

    def __init__(self, url: str, state: Database, effect_db: Database, count: int) -> None:
        settings = Settings(nats_url=url)
        self.state, self.effect_db, self.count = state, effect_db, count
        self.relay = keel.events.Relay(state, settings=settings, publishes=[SPEC])
        self.consumers = keel.events.Consumers(effect_db, [Counter()], settings=settings)
        self.begun: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.finished = asyncio.Event()
        _on_handled.append(self.handled)

    def handled(self, name: str) -> None:
        self.done[name] = time.perf_counter()
        if len(self.done) == self.count:
            self.finished.set()

    async def one(self, name: str) -> None:
        async with self.state.transaction() as session:
            await session.execute(insert(things).values(id=name))
            await ThingPublisher(session).thing_done(wrappers_pb2.StringValue(value=name))
        self.begun[name] = time.perf_counter()  # committed

    async def close(self) -> None:
        _on_handled.remove(self.handled)
        await self.consumers.stop()
        await self.relay.stop()
        await self.state.dispose()
        await self.effect_db.dispose()


async def keel_round(
    url: str, make: Databases, tag: str, *, db: str, count: int, producers: int
) -> Row:
    """End to end: producers commit, the relay publishes, the subscriber handles, at once."""
    run = _Keel(
        url,
        await make(f"state_{tag}", state_metadata),
        await make(f"effects_{tag}", effect_metadata),
        count,
    )
    await run.relay.start()
    await run.consumers.start()
    started = _clocks()
    await _produce(count, producers, run.one)
    await run.finished.wait()
    row = _row("keel", db, started, run.done, run.begun)
    await run.close()
    return row


async def stages_round(
    url: str, make: Databases, tag: str, *, db: str, count: int, producers: int
) -> list[Row]:
    """Keel's stages one after the other, each alone: `outbox` the producers' commits with
    their events, `relay` the outbox published to the broker, `inbox` the subscriber handling
    them (broker delivery, handler, inbox, acks)."""
    run = _Keel(
        url,
        await make(f"sstate_{tag}", state_metadata),
        await make(f"seffects_{tag}", effect_metadata),
        count,
    )
    started = _clocks()
    await _produce(count, producers, run.one)
    rows = [_row("outbox", db, started, run.begun)]
    started = _clocks()
    await run.relay.start()
    while run.relay.sent < count:
        await asyncio.sleep(0.002)  # a figure for the bench, not a test: polling is fine here
    elapsed, cpu = time.perf_counter() - started[0], time.thread_time() - started[1]
    rows.append(Row("relay", db, count / elapsed, _NO_LATENCY, _NO_LATENCY, cpu * 1e6 / count))
    started = _clocks()
    await run.consumers.start()
    await run.finished.wait()
    rows.append(_row("inbox", db, started, run.done))
    await run.close()
    return rows


async def raw_round(
    url: str,
    stream: str,
    *,
    count: int,
    producers: int,
    make: Databases | None = None,
    db: str = "",
) -> Row:
    """Raw JetStream; with `make`, also the same database work as keel's round (the state
    change committed before the publish, the batch's effects committed before the acks), but
    no outbox and no inbox."""
    state = effect_db = None
    if make is not None:
        state = await make(f"raw_state_{stream.lower()}", state_metadata)
        effect_db = await make(f"raw_effects_{stream.lower()}", effect_metadata)
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
    started = _clocks()
    await _produce(count, producers, one)
    await consumer
    row = _row("raw" if make is None else "raw+db", db, started, done, begun)
    for database in (state, effect_db):
        if database is not None:
            await database.dispose()
    await js.delete_stream(stream)
    await nc.close()
    return row


async def main_async(count: int, rounds: int, producers: int, backends: list[str]) -> list[Row]:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    broker = start_broker(WORK / "nats")
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        stack.callback(broker.stop)
        makers: dict[str, Databases] = {}
        for backend in backends:
            if backend == "sqlite":
                makers[backend] = sqlite_databases(WORK)
                continue
            try:
                server = stack.enter_context(PostgresServer.start())
            except PostgresMissingError as error:
                print(f"postgresql: skipped ({error})")
                continue
            makers[backend] = postgres_databases(server)
        for number in range(rounds):  # interleaved: every kind once per round
            rows.append(
                await raw_round(broker.url, f"RAW{number}", count=count, producers=producers)
            )
            for db, make in makers.items():
                tag = f"{db[:2]}{number}"
                rows.append(
                    await raw_round(
                        broker.url,
                        f"RAWDB{tag}",
                        make=make,
                        count=count,
                        producers=producers,
                        db=db,
                    )
                )
                rows.append(
                    await keel_round(broker.url, make, tag, db=db, count=count, producers=producers)
                )
                rows += await stages_round(
                    broker.url, make, tag, db=db, count=count, producers=producers
                )
                rows.append(await commit_round(make, tag, db, count, producers))
    return rows


def _median(rows: list[Row], mode: str, db: str = "") -> Row:
    chosen = [r for r in rows if r.mode == mode and r.db == db]
    return sorted(chosen, key=lambda r: r.events_per_s)[len(chosen) // 2]


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def _us(row: Row) -> str:
    """Wall time / event loop CPU time per event."""
    return f"{1e6 / row.events_per_s:.0f}/{row.cpu_us:.0f} us"


def report(rows: list[Row]) -> None:
    """The median of each kind, the ratio, and where each event's time goes."""
    raw = _median(rows, "raw")
    print(
        f"median raw JetStream: {raw.events_per_s:.0f}/s,"
        f" p50/p99 {raw.p50_ms:.1f}/{raw.p99_ms:.1f} ms"
    )
    for db in dict.fromkeys(r.db for r in rows if r.db):
        ours, with_db = _median(rows, "keel", db), _median(rows, "raw+db", db)
        commit, outbox = _median(rows, "commit", db), _median(rows, "outbox", db)
        relay, inbox = _median(rows, "relay", db), _median(rows, "inbox", db)
        print(
            f"{db}: keel {ours.events_per_s:.0f}/s,"
            f" ratio keel/raw events/s: {ours.events_per_s / raw.events_per_s:.2f}x"
            f" (target >= 0.5x); commit-to-handled p50/p99 {ours.p50_ms:.1f}/{ours.p99_ms:.1f} ms"
        )
        print(
            f"{db}: with the same database work: raw+db {with_db.events_per_s:.0f}/s,"
            f" keel/raw+db {ours.events_per_s / with_db.events_per_s:.2f}x"
        )
        print(
            f"{db}: per event, each stage alone (wall/event-loop CPU): producer commit"
            f" {_us(outbox)} (the state change alone {_us(commit)}), relay {_us(relay)},"
            f" consumer {_us(inbox)} (broker delivery, handler's insert, inbox, ack);"
            f" raw JetStream publish+consume {_us(raw)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--producers", type=int, default=16)
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="sqlite, postgresql, or both"
    )
    args = parser.parse_args()
    keel.runtime.logs.configure("warning")
    backends = args.databases.split(",")
    rows = run(main_async(args.events, args.rounds, args.producers, backends))  # on uvloop
    print(
        f"events end to end: {args.events} events x {args.rounds} rounds,"
        f" {args.producers} producers"
    )
    print(
        f"{'mode':<7} {'database':<10} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'cpu us/ev':>9}   (every round)"
    )
    for row in rows:
        print(
            f"{row.mode:<7} {row.db or '-':<10} {row.events_per_s:>10.0f}"
            f" {_ms(row.p50_ms):>8} {_ms(row.p99_ms):>8} {row.cpu_us:>9.0f}"
        )
    report(rows)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
