"""`keel dev` (what `make run` starts): every service serves its own REST routes, in real
processes, next to the gateway that stays the shop's one entry point."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import devprocess
from tests.conftest import answers
from tests.devprocess import SERVICES

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Dev:
    gateway: str
    rest: dict[str, str]
    """Each service's REST address, as keel dev printed it."""
    log: Path

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    folder = tmp_path_factory.mktemp("rest-dev")
    launched = devprocess.launch(folder)
    process, log, port = launched.process, launched.log, launched.port
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C stops them all" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)  # polling for the condition, not waiting a fixed time
        address = re.compile(r"^\s+(\S+)\s+127\.0\.0\.1:\d+\s+(http://\S+)\s", re.M)
        printed = address.findall(log.read_text())
        gateway = f"http://127.0.0.1:{port}"
        while not answers(f"{gateway}/healthz"):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield Dev(gateway, dict(printed), log)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=30) == 0, log.read_text()
        finally:
            process.kill()


def _call(url: str, body: object = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with _DIRECT.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_each_service_prints_and_serves_its_rest_port(dev: Dev) -> None:
    assert set(dev.rest) == set(SERVICES), dev.output()
    assert len(set(dev.rest.values())) == 3
    catalog = dev.rest["acme.catalog.v1.CatalogService"]
    status, product = _call(f"{catalog}/v1/products/p_mug")
    assert (status, product["title"]) == (200, "Mug")
    status, document = _call(f"{catalog}/openapi.json")
    assert status == 200
    assert "/v1/products/{product_id}" in document["paths"]
    assert not [path for path in document["paths"] if path.startswith("/v1/orders")]
    status, _ = _call(f"{catalog}/v1/orders/o_1")  # another service's route
    assert status == 404


def test_an_order_through_the_orders_rest_port(dev: Dev) -> None:
    orders = dev.rest["acme.orders.v1.OrderService"]
    status, refused = _call(f"{orders}/v1/orders", {"customerId": "c1"})
    assert status == 400
    fields = {v["field"] for d in refused["details"] for v in d.get("fieldViolations", ())}
    assert {"lines", "paymentMethodToken"} <= fields
    order = {
        "customerId": "c1",
        "paymentMethodToken": "tok_visa",
        "lines": [{"productId": "p_mug", "quantity": 1}],
    }
    status, placed = _call(f"{orders}/v1/orders", order)
    assert status == 200, placed
    assert placed["order"]["state"] == "ORDER_STATE_CONFIRMED"
    # The same order through the gateway, the shop's one entry point (passed through to
    # orders' REST port).
    status, seen = _call(f"{dev.gateway}/v1/orders/{placed['order']['orderId']}")
    assert (status, seen["order"]["state"]) == (200, "ORDER_STATE_CONFIRMED")
    lines = [line for line in dev.output().splitlines() if "orders\x1b[0m │" in line]
    assert any("route" in line and "/v1/orders" in line for line in lines)  # its own line
