"""`keel gateway --workers N`: N processes on one port, metrics merged, a clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keel.testing
from catalog.service import CatalogService
from catalog.store import MemoryStore, seed
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, free_port
from tests.test_gateway import _DIRECT, call

KEEL = str(Path(sys.executable).parent / "keel")


def _listeners(port: int) -> int:
    """Listening TCP sockets on `port` (each SO_REUSEPORT worker has its own)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            count += 1
    return count


def _requests(text: str, route: str, status: str) -> float:
    """How many GET requests for `route` answered `status`, by the edge's own histogram."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "http_server_request_duration_seconds_count"
        and sample.labels
        == {
            "http_request_method": "GET",
            "http_route": route,
            "http_response_status_code": status,
        }
    )


def _handled_ok(text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "grpc_client_handled_total"
        and sample.labels.get("grpc_method") == "GetProduct"
        and sample.labels.get("grpc_code") == "OK"
    )


async def test_workers_share_the_port_merge_metrics_and_stop_cleanly() -> None:
    async with keel.testing.cluster(CatalogService(seed(MemoryStore()))) as running:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        command = [KEEL, "gateway", "--gen", str(REPO / "gen"), "--port", str(port)]
        command += ["--default-target", running.address("acme.catalog.v1.CatalogService")]
        gateway = subprocess.Popen(
            [*command, "--workers", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while _listeners(port) < 2:
                assert gateway.poll() is None, gateway.communicate()
                assert time.monotonic() < deadline, "the workers did not start"
                await asyncio.sleep(0.1)
            children = Path(f"/proc/{gateway.pid}/task/{gateway.pid}/children").read_text()
            assert len(children.split()) == 2

            replies = await asyncio.gather(*(call(f"{url}/v1/products/p_mug") for _ in range(40)))
            assert {r.status for r in replies} == {200}

            def metrics() -> str:
                with _DIRECT.open(f"{url}/metrics", timeout=10) as response:
                    return str(response.read().decode())

            # Whichever worker answers /metrics, it reports every worker's calls and requests.
            for _ in range(3):
                text = await asyncio.to_thread(metrics)
                assert _handled_ok(text) == 40
                assert _requests(text, "/v1/products/{product_id}", "200") == 40
        finally:
            gateway.send_signal(signal.SIGTERM)
            _, err = await asyncio.to_thread(gateway.communicate, timeout=30)
        assert gateway.returncode == 0, err.decode()
        assert _listeners(port) == 0


def test_workers_need_a_fixed_port() -> None:
    result = subprocess.run(
        [KEEL, "gateway", "--gen", str(REPO / "gen"), "--port", "0", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--workers > 1 needs a fixed --port" in result.stderr


def test_workers_must_be_a_positive_number() -> None:
    result = subprocess.run(
        [KEEL, "gateway", "--workers", "zero"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "expected a whole number >= 1" in result.stderr
