"""`keel dev`'s gateway passes requests through to the services' own REST ports.

keel dev gives each service a REST port (KEEL_REST_PORT) and the gateway where they are
(KEEL_REST_TARGET_<SERVICE>), so with KEEL_GATEWAY_UPSTREAM's default (auto) a request to the
gateway reaches the service over HTTP: the service logs it as a REST request of its own (an
`http` line with its route), not as a gRPC call. Under --watch the gateway is given the REST
ports as they are when it starts again (a service that arrived since has a new one).
"""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from keel.dev.child import Child
from keel.dev.services import DevService, gateway_env
from keel.dev.session import Session

from tests import devprocess
from tests.conftest import answers

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def test_keel_dev_gateway_passes_through_to_each_rest_port(tmp_path: Path) -> None:
    launched = devprocess.launch(tmp_path)
    process, log = launched.process, launched.log
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C stops them all" not in log.read_text() or not answers(
            f"{launched.gateway}/healthz"
        ):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)  # polling for the condition, not waiting a fixed time
        output = _ANSI.sub("", log.read_text())
        serving = next(
            line for line in output.splitlines() if "gateway" in line and " serving " in line
        )
        for name in devprocess.SERVICES:
            assert name in serving, serving  # the gateway's "serving" line: rest=...
        request = urllib.request.Request(
            f"{launched.gateway}/v1/products/p_mug", headers={"x-request-id": "passed-1"}
        )
        with _DIRECT.open(request, timeout=10) as response:
            assert json.loads(response.read())["title"] == "Mug"
        # The catalog logged it as a REST request of its own (its route on the line).
        deadline = time.monotonic() + 30
        while not [
            line
            for line in _ANSI.sub("", log.read_text()).splitlines()
            if line.lstrip().startswith("catalog") and "passed-1" in line and "route=" in line
        ]:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=60) == 0, log.read_text()
        finally:
            process.kill()


async def test_the_gateway_is_given_the_rest_ports_as_they_are_now(tmp_path: Path) -> None:
    catalog = DevService("catalog", "catalog", ("acme.catalog.v1.CatalogService",), 50061)
    orders = DevService("orders", "orders", ("acme.orders.v1.OrderService",), 50062)
    registry = tmp_path / "registry.toml"
    env = gateway_env(tmp_path, registry, {"acme.catalog.v1.CatalogService": 7001})
    assert env["KEEL_REST_TARGET_ACME_CATALOG_V1_CATALOGSERVICE"] == "127.0.0.1:7001"
    gateway = Child("gateway", ["true"], env, "", port=8080)
    session = Session([catalog], {}, {"catalog": 7001}, gateway, 8080, None, watching=True)  # type: ignore[arg-type]
    await session.refresh_gateway(tmp_path, registry)
    assert gateway.env["KEEL_REST_TARGET_ACME_CATALOG_V1_CATALOGSERVICE"] == "127.0.0.1:7001"
    # A service arrived (its own REST port), one went: the next start of the gateway knows.
    session.services = [orders]
    session.rest_ports = {"orders": 7002}
    await session.refresh_gateway(tmp_path, registry)
    assert gateway.env["KEEL_REST_TARGET_ACME_ORDERS_V1_ORDERSERVICE"] == "127.0.0.1:7002"
    assert "KEEL_REST_TARGET_ACME_CATALOG_V1_CATALOGSERVICE" not in gateway.env
    assert gateway.env["KEEL_BREAKER_RESET"] == "1"  # (--watch's defaults stay)


@pytest.fixture(autouse=True)
def _no_inherited_rest_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    import os  # noqa: PLC0415

    for key in [k for k in os.environ if k.startswith("KEEL_REST_TARGET_")]:
        monkeypatch.delenv(key)
