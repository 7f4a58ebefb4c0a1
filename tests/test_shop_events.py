"""The shop's events, proven on real processes: catalog, payments and orders as `python -m
<service>` on their own SQLite files, a real nats-server. Bursts of orders (several in flight
through the generated client) while the broker, or catalog, is SIGKILLed and started again:
catalog's units-sold read model ends equal to the quantities of the confirmed orders (each
OrderPlaced and OrderCancelled counted exactly once: rows counted in catalog's database), and
stock equals the start less those: catalog holds stock for confirmed orders only, even for
orders rejected while it was unreachable (their sagas release what may have been reserved once
it is back; see _assert_held). `keel events dlq catalog` (the real CLI) lists nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import nats
from acme.catalog.v1 import catalog_keel, catalog_pb2
from acme.orders.v1 import orders_keel, orders_pb2
from keel.events.broker import free_port
from keel.runtime.config import Settings
from keel.testing.nats import Broker, eventually, nats_broker

from tests.conftest import BIN, REPO

__all__ = ["nats_broker"]  # a fixture, for pytest

START = {"p_mug": 200, "p_kettle": 25, "p_teapot": 10}  # catalog's seed stock
PICKS = ("p_mug", "p_mug", "p_mug", "p_kettle", "p_teapot")  # the burst's products, in turn
CONFIRMED = orders_pb2.ORDER_STATE_CONFIRMED
CALLER = Settings(breaker_threshold=10_000)
"""The test's calls: orders' UNAVAILABLE answers while catalog is down do not open its circuit."""
CANCELLED = orders_pb2.ORDER_STATE_CANCELLED


class Service:
    """`python -m <name>` with its state in `folder`, migrated at start-up: started, SIGKILLed
    and started again on the same port and database."""

    def __init__(self, name: str, folder: Path, **env: str) -> None:
        self.name = name
        self.port = free_port()
        self.folder = folder
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / f"{name}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.folder / self.name / f"{self.name}.sqlite3"

    def start(self) -> None:
        settings = {
            "KEEL_HOST": "127.0.0.1",
            "KEEL_PORT": str(self.port),
            "KEEL_METRICS_PORT": "0",
            "KEEL_LOG_FORMAT": "json",
            "KEEL_LOG_CALLS": "false",
            "KEEL_STATE_DIR": str(self.folder / self.name),
            "KEEL_MIGRATE": "true",
            **self.env,
        }
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.name],
                env={**clean, **settings},
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 60
        while '"event":"serving"' not in self.log.read_text()[offset:]:
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)  # polling the log for the "serving" line

    def kill(self) -> None:
        """SIGKILL: a crash, nothing drained."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            assert self.process.wait(timeout=30) == 0, self.log.read_text()
        finally:
            self.process.kill()


@contextmanager
def shop(folder: Path, broker: Broker) -> Iterator[tuple[Service, Service, Service]]:
    """catalog (consuming the orders' events, a short ack wait so that what a killed catalog
    fetched comes back soon), payments and orders (its relay publishing), all started."""
    catalog = Service("catalog", folder, KEEL_NATS_URL=broker.url, KEEL_EVENTS_ACK_WAIT="2")
    payments = Service("payments", folder)
    orders = Service(
        "orders",
        folder,
        KEEL_NATS_URL=broker.url,
        KEEL_BREAKER_RESET="0.5",  # catalog is back soon after its restart
        KEEL_SAGA_BACKOFF="0.1,0.5",  # orders' sagas give up on a peer that is down soon,
        KEEL_SAGA_LEASE="2",  # and retry their compensations every 2 s until it is back
        KEEL_TARGET_ACME_CATALOG_V1_CATALOGSERVICE=catalog.address,
        KEEL_TARGET_ACME_PAYMENTS_V1_PAYMENTSERVICE=payments.address,
    )
    started = []
    try:
        for service in (catalog, payments, orders):
            service.start()
            started.append(service)
        yield catalog, payments, orders
    finally:
        for service in reversed(started):
            service.stop()


def _order(index: int) -> orders_pb2.CreateOrderRequest:
    return orders_pb2.CreateOrderRequest(
        customer_id=f"c_{index % 7}",
        lines=[orders_pb2.OrderLine(product_id=PICKS[index % len(PICKS)], quantity=1)],
        payment_method_token="tok_visa",
    )


async def burst(
    address: str, count: int, at: dict[int, Callable[[], Awaitable[None]]]
) -> tuple[list[orders_pb2.Order], list[grpc.StatusCode]]:
    """`count` orders, 8 in flight; `at[n]()` runs once n are answered: the orders in flight
    go on meanwhile, new ones wait until it returns. The orders placed (answered or not), and
    the status codes of the failed calls."""
    answered = 0
    failures: list[grpc.StatusCode] = []
    actions: list[asyncio.Task[None]] = []
    flight, gate = asyncio.Semaphore(8), asyncio.Lock()
    async with orders_keel.OrderServiceClient.connect(address, settings=CALLER) as orders:

        async def act(action: Callable[[], Awaitable[None]]) -> None:
            async with gate:
                await action()

        async def one(index: int) -> None:
            nonlocal answered
            request = _order(index)
            request.request_id = f"r-{index}"
            async with flight:
                async with gate:  # not while an action runs
                    pass
                try:
                    await orders.create_order(request, timeout=10)
                except grpc.aio.AioRpcError as error:  # sold out, or catalog down
                    failures.append(error.code())
            answered += 1
            if answered in at:
                actions.append(asyncio.create_task(act(at[answered])))

        await asyncio.gather(*(one(i) for i in range(count)))
        await asyncio.gather(*actions)
        return await _all_orders(orders), failures


async def _reaches_catalog(address: str) -> None:
    """Wait until orders places orders again (its channel to catalog reconnected): probe orders,
    kept with the others."""
    probes = iter(range(10_000, 20_000))

    async def placed() -> bool:
        async with orders_keel.OrderServiceClient.connect(address, settings=CALLER) as orders:
            try:
                await orders.create_order(_order(next(probes)), timeout=10)
            except grpc.aio.AioRpcError as error:
                return error.code() == grpc.StatusCode.FAILED_PRECONDITION  # sold out: reached
            return True

    # (gRPC waits up to 1.6 times as long as the outage before it reconnects: give it time)
    await eventually(placed, timeout=60, what="orders reaching catalog again", interval=0.2)


async def _all_orders(orders: orders_keel.OrderServiceClient) -> list[orders_pb2.Order]:
    found = []
    for customer in range(7):
        token = ""
        while True:
            page = await orders.list_orders(
                orders_pb2.ListOrdersRequest(
                    customer_id=f"c_{customer}", page_size=100, page_token=token
                )
            )
            found += list(page.orders)
            if not (token := page.next_page_token):
                break
    return found


async def cancel_some(address: str, placed: list[orders_pb2.Order], every: int) -> None:
    """Cancel every `every`th confirmed order (each publishes OrderCancelled)."""
    confirmed = [o for o in placed if o.state == CONFIRMED]
    async with orders_keel.OrderServiceClient.connect(address, settings=CALLER) as orders:
        for order in confirmed[::every]:
            await orders.cancel_order(orders_pb2.CancelOrderRequest(order_id=order.order_id))


def _sold(placed: list[orders_pb2.Order]) -> dict[str, int]:
    """Units per product in the confirmed (not cancelled) orders."""
    units = dict.fromkeys(START, 0)
    for order in placed:
        if order.state == CONFIRMED:
            for line in order.lines:
                units[line.product_id] += line.quantity
    return units


def _rows(database: Path, query: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return db.execute(query).fetchall()


async def _consumers_idle(url: str) -> bool:
    """Whether catalog's durable consumers have nothing pending or unacknowledged."""
    nc = await nats.connect(url)
    try:
        infos = await nc.jetstream().consumers_info(orders_keel.ORDER_PLACED.stream)
        return len(infos) == 2 and all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos)
    finally:
        await nc.close()


def _assert_held(catalog: Service, placed: list[orders_pb2.Order]) -> None:
    """Catalog keeps stock reserved for the CONFIRMED orders, each of them, and no other (a
    cancelled, rejected or unknown order holding stock fails)."""
    reserved = _rows(catalog.database, "SELECT order_id FROM reservations")
    assert {row[0] for row in reserved} == {o.order_id for o in placed if o.state == CONFIRMED}


async def _final(address: str) -> list[orders_pb2.Order]:
    """Every order, once none is PENDING (a saga still undoing waits for its peer)."""
    found: list[orders_pb2.Order] = []

    async def none_pending() -> bool:
        nonlocal found
        async with orders_keel.OrderServiceClient.connect(address, settings=CALLER) as orders:
            found = await _all_orders(orders)
        return all(o.state != orders_pb2.ORDER_STATE_PENDING for o in found)

    await eventually(none_pending, timeout=40, what="no order left PENDING")
    return found


async def settled(catalog: Service, broker: Broker, placed: list[orders_pb2.Order]) -> None:
    """Wait until catalog handled every event (one inbox row each) and its consumers are idle,
    then check the read model, the stock and the rows against the orders."""
    # OrderPlaced for each confirmed order, and OrderCancelled too for each cancelled (all of
    # them were confirmed first).
    events = sum(o.state == CONFIRMED for o in placed) + 2 * sum(
        o.state == CANCELLED for o in placed
    )

    async def handled() -> bool:
        (count,) = _rows(catalog.database, "SELECT count(*) FROM keel_inbox")[0]
        return count == events and await _consumers_idle(broker.url)

    await eventually(handled, timeout=40, what=f"catalog handles {events} events")
    sold = _sold(placed)
    _assert_held(catalog, placed)
    async with catalog_keel.CatalogServiceClient.connect(catalog.address) as client:
        for product_id, start in START.items():
            reply = await client.get_product(catalog_pb2.GetProductRequest(product_id=product_id))
            assert reply.product.units_sold == sold[product_id], (product_id, sold)
            assert reply.product.stock == start - sold[product_id], (product_id, sold)
    # Each event once: one inbox row per event id, and the read model's rows sum to the units.
    inbox = _rows(catalog.database, "SELECT event_id FROM keel_inbox")
    assert len({row[0] for row in inbox}) == events
    units: dict[str, int] = dict(
        _rows(catalog.database, "SELECT product_id, units FROM units_sold")
    )
    assert {p: units.get(p, 0) for p in START} == sold


async def test_broker_killed_mid_burst_every_event_counts_once(
    tmp_path: Path, nats_broker: Broker
) -> None:
    with shop(tmp_path, nats_broker) as (catalog, _, orders):

        async def kill() -> None:
            nats_broker.kill()

        async def restart() -> None:
            await asyncio.to_thread(nats_broker.restart)  # same port, same store

        placed, failures = await burst(orders.address, 300, {80: kill, 200: restart})
        # The broker's outage cost no order: the only failures are the sold-out ones.
        confirmed = sum(min(START[p], 300 * PICKS.count(p) // len(PICKS)) for p in START)
        assert failures == [grpc.StatusCode.FAILED_PRECONDITION] * (300 - confirmed)
        assert len(placed) == 300
        assert sum(o.state == CONFIRMED for o in placed) == confirmed
        await cancel_some(orders.address, placed, every=10)
        placed = await _final(orders.address)
        assert sum(o.state == CANCELLED for o in placed) == (confirmed + 9) // 10
        await settled(catalog, nats_broker, placed)
        # A clean run leaves no dead letters: the real CLI lists none.
        done = subprocess.run(
            [str(BIN / "keel"), "events", "dlq", "catalog", "--nats-url", nats_broker.url],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "evt_" not in done.stdout  # no dead letter listed
        assert "0 dead letter(s) of acme.catalog.v1.CatalogService" in done.stderr


async def test_catalog_killed_mid_burst_every_confirmed_order_counts_once(
    tmp_path: Path, nats_broker: Broker
) -> None:
    with shop(tmp_path, nats_broker) as (catalog, _, orders):

        async def kill() -> None:
            catalog.kill()

        async def restart() -> None:
            await asyncio.to_thread(catalog.start)  # same port, same database
            await _reaches_catalog(orders.address)

        placed, failures = await burst(orders.address, 240, {60: kill, 80: restart})
        assert grpc.StatusCode.UNAVAILABLE in failures  # while catalog was down
        assert set(failures) <= {
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.FAILED_PRECONDITION,  # sold out
        }
        assert sum(o.state == CONFIRMED for o in placed) > 100
        await cancel_some(orders.address, placed, every=10)
        placed = await _final(orders.address)
        assert orders_pb2.ORDER_STATE_REJECTED in {o.state for o in placed}  # while it was down
        await settled(catalog, nats_broker, placed)
