"""`python -m catalog` with KEEL_WORKERS=2 on one SQLite file, migrated at start-up: the
workers share stock without overselling and hand out ids that never collide."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from acme.catalog.v1 import catalog_keel, catalog_pb2

Client = catalog_keel.CatalogServiceClient


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def catalog_workers(tmp_path: Path) -> Iterator[str]:
    """Two catalog workers on one port; their address."""
    port = _free_port()
    log = tmp_path / "catalog.log"
    settings = {
        "KEEL_HOST": "127.0.0.1",
        "KEEL_PORT": str(port),
        "KEEL_WORKERS": "2",
        "KEEL_METRICS_PORT": "0",
        "KEEL_LOG_FORMAT": "json",
        "KEEL_LOG_CALLS": "false",
        "KEEL_STATE_DIR": str(tmp_path / "state"),
        "KEEL_MIGRATE": "true",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "catalog"], env={**env, **settings}, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while log.read_text().count('"event":"serving"') < 2:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)  # polling the log for both workers' "serving" lines
        yield f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            process.kill()
    assert "catalog: database at revision" in log.read_text()


async def _reserve(address: str, order_id: str) -> grpc.StatusCode:
    async with Client.connect(address) as catalog:  # a connection of its own: either worker
        try:
            await catalog.reserve_stock(
                catalog_pb2.ReserveStockRequest(
                    order_id=order_id,
                    lines=[catalog_pb2.StockLine(product_id="p_teapot", quantity=1)],
                )
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def _create(address: str, count: int) -> list[str]:
    async with Client.connect(address) as catalog:
        made = []
        for i in range(count):
            reply = await catalog.create_product(
                catalog_pb2.CreateProductRequest(
                    product=catalog_pb2.Product(title=f"Cup {i}", price_cents=500, currency="EUR")
                )
            )
            made.append(reply.product.product_id)
        return made


async def test_two_workers_share_stock_and_ids(catalog_workers: str) -> None:
    codes = await asyncio.gather(*(_reserve(catalog_workers, f"o_{i}") for i in range(16)))
    assert codes.count(grpc.StatusCode.OK) == 10  # the teapot's stock, not one more
    assert codes.count(grpc.StatusCode.FAILED_PRECONDITION) == 6
    made = [
        i
        for batch in await asyncio.gather(*(_create(catalog_workers, 5) for _ in range(8)))
        for i in batch
    ]
    assert len(set(made)) == 40
    listed, token = [], ""
    async with Client.connect(catalog_workers) as catalog:
        while True:
            page = await catalog.list_products(
                catalog_pb2.ListProductsRequest(page_size=7, page_token=token)
            )
            listed += [p.product_id for p in page.products]
            if not (token := page.next_page_token):
                break
        teapot = await catalog.get_product(catalog_pb2.GetProductRequest(product_id="p_teapot"))
    assert teapot.product.stock == 0
    assert sorted(listed) == listed
    assert set(listed) == {*made, "p_kettle", "p_mug", "p_teapot"}
    assert len(listed) == 43  # the seed products once, though both workers seeded
