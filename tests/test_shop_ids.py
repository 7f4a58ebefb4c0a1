"""The shop's services in their own processes, on their own SQLite files: orders restarted
between orders and run with KEEL_WORKERS=2 never hands out an id twice, so catalog's and
payments' de-duplication by order id never returns an earlier order's stock or payment; the
events of orders placed while no broker was configured wait in its outbox and are published
once one is."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nats
from acme.catalog.v1 import catalog_keel, catalog_pb2
from acme.orders.v1 import orders_keel, orders_pb2
from acme.payments.v1 import payments_keel, payments_pb2
from keel.events.broker import free_port
from keel.testing.nats import Broker, eventually, nats_broker

from tests import test_db_cli as db_cli
from tests.conftest import REPO

__all__ = ["nats_broker"]  # a fixture, for pytest

CONFIRMED = orders_pb2.ORDER_STATE_CONFIRMED


@contextmanager
def _service(name: str, folder: Path, workers: int = 1, **env: str) -> Iterator[str]:
    """`python -m <name>` with its state in `folder`, migrated at start-up; its address once
    each worker serves. Stopped (SIGTERM) when the block ends."""
    port = free_port()
    log = folder / f"{name}-{time.monotonic_ns()}.log"
    settings = {
        "KEEL_HOST": "127.0.0.1",
        "KEEL_PORT": str(port),
        "KEEL_WORKERS": str(workers),
        "KEEL_METRICS_PORT": "0",
        "KEEL_LOG_FORMAT": "json",
        "KEEL_LOG_CALLS": "false",
        "KEEL_STATE_DIR": str(folder / name),
        "KEEL_MIGRATE": "true",
        **env,
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", name], env={**clean, **settings}, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while log.read_text().count('"event":"serving"') < workers:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)  # polling the log for every worker's "serving" line
        yield f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=30) == 0, log.read_text()
        finally:
            process.kill()


def _order(quantity: int, request_id: str = "") -> orders_pb2.CreateOrderRequest:
    return orders_pb2.CreateOrderRequest(
        customer_id="c_1",
        lines=[orders_pb2.OrderLine(product_id="p_mug", quantity=quantity)],
        payment_method_token="tok_visa",
        request_id=request_id,
    )


async def _place(
    address: str, requests: list[orders_pb2.CreateOrderRequest]
) -> list[orders_pb2.Order]:
    """Each request on a connection of its own (so both workers take some), at once."""

    async def one(request: orders_pb2.CreateOrderRequest) -> orders_pb2.Order:
        async with orders_keel.OrderServiceClient.connect(address) as orders:
            return (await orders.create_order(request)).order

    return list(await asyncio.gather(*(one(r) for r in requests)))


async def _listed(address: str) -> list[str]:
    listed, token = [], ""
    async with orders_keel.OrderServiceClient.connect(address) as orders:
        while True:
            page = await orders.list_orders(
                orders_pb2.ListOrdersRequest(customer_id="c_1", page_size=4, page_token=token)
            )
            listed += [o.order_id for o in page.orders]
            if not (token := page.next_page_token):
                return listed


async def _published(url: str) -> list[tuple[str, str]]:
    """(subject, order id) of each event in orders' stream, in stream order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        count = (await js.stream_info(orders_keel.ORDER_PLACED.stream)).state.messages
        messages = [
            await js.get_msg(orders_keel.ORDER_PLACED.stream, seq) for seq in range(1, count + 1)
        ]
        kinds: dict[str, Callable[[bytes], orders_pb2.OrderPlaced | orders_pb2.OrderCancelled]]
        kinds = {
            orders_keel.ORDER_PLACED.subject: orders_pb2.OrderPlaced.FromString,
            orders_keel.ORDER_CANCELLED.subject: orders_pb2.OrderCancelled.FromString,
        }
        return [
            (m.subject, kinds[m.subject](m.data or b"").order_id)
            for m in messages
            if m.subject is not None
        ]
    finally:
        await nc.close()


async def test_restarted_orders_with_two_workers_never_repeat_an_id(
    tmp_path: Path, nats_broker: Broker
) -> None:
    with (
        _service("catalog", tmp_path) as catalog_at,
        _service("payments", tmp_path) as payments_at,
    ):
        peers = {
            "KEEL_TARGET_ACME_CATALOG_V1_CATALOGSERVICE": catalog_at,
            "KEEL_TARGET_ACME_PAYMENTS_V1_PAYMENTSERVICE": payments_at,
        }
        # No broker yet: the events wait in the outbox.
        with _service("orders", tmp_path, workers=2, **peers) as orders_at:
            before = await _place(orders_at, [_order(1, "r-1"), *[_order(1) for _ in range(5)]])
        with _service(
            "orders", tmp_path, workers=2, KEEL_NATS_URL=nats_broker.url, **peers
        ) as orders_at:
            after = await _place(orders_at, [_order(2) for _ in range(6)])
            retried = (await _place(orders_at, [_order(1, "r-1")]))[0]
            async with orders_keel.OrderServiceClient.connect(orders_at) as orders:
                await orders.cancel_order(orders_pb2.CancelOrderRequest(order_id=after[0].order_id))
            listed = await _listed(orders_at)
        async with catalog_keel.CatalogServiceClient.connect(catalog_at) as catalog:
            mug = await catalog.get_product(catalog_pb2.GetProductRequest(product_id="p_mug"))
        async with payments_keel.PaymentServiceClient.connect(payments_at) as payments:
            paid = [
                (
                    await payments.get_payment(
                        payments_pb2.GetPaymentRequest(payment_id=o.payment.payment_id)
                    )
                ).payment
                for o in [*before, *after]
            ]
    ids = [o.order_id for o in [*before, *after]]
    assert len(set(ids)) == 12  # no id handed out twice, across workers and the restart
    assert all(o.state == CONFIRMED for o in [*before, *after])
    assert max(o.order_id for o in before) < min(o.order_id for o in after)  # creation order
    # A new order is never taken for an old one: its own payment, its own stock.
    assert len({p.payment_id for p in paid}) == 12
    assert [p.order_id for p in paid] == ids
    assert [p.amount_cents for p in paid] == [899] * 6 + [2 * 899] * 6
    assert mug.product.stock == 200 - 6 - 12 + 2  # the cancelled order's back
    assert retried.order_id == before[0].order_id  # the request id survived the restart
    assert listed == sorted(ids)
    # The six placed without a broker were published once orders ran with one; each event once.
    placed, cancelled = orders_keel.ORDER_PLACED.subject, orders_keel.ORDER_CANCELLED.subject
    expected = {*((placed, i) for i in ids), (cancelled, after[0].order_id)}

    async def all_published() -> bool:
        return set(await _published(nats_broker.url)) >= expected

    await eventually(all_published, what="every event published")
    assert sorted(await _published(nats_broker.url)) == sorted(expected)


def test_orders_and_payments_have_databases_checked_by_keel_db() -> None:
    for name in ("orders", "payments"):
        pyproject = tomllib.loads((REPO / "services" / name / "pyproject.toml").read_text())
        assert pyproject["tool"]["keel"]["models"] == f"{name}.tables:Base"
        assert list((REPO / "services" / name / "migrations" / "versions").glob("*.py"))
    assert {"orders", "payments"} <= set(db_cli.SERVICES)  # upgrade/check/downgrade run on them
