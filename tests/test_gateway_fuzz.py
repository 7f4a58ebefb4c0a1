"""Fuzz the gateway with schemathesis against its own OpenAPI document: never a 5xx, never a crash.

The example services and the gateway run in a background thread (their own event loop) for
the module; schemathesis generates requests from /openapi.json, valid and invalid.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import keel.testing
import pytest
import schemathesis
import uvicorn
from catalog.service import CatalogService
from catalog.store import MemoryStore, seed
from hypothesis import HealthCheck, settings
from keel.gateway import Gateway
from keel.gateway.serve import uvicorn_config
from keel.runtime.config import Settings
from orders.service import OrderService
from payments.service import PaymentService

from tests.conftest import shop_routes

# The shop's routes alone: the services it starts (the workspace may hold others).
ROUTES = shop_routes()
# Watching an order streams until it ships: not a request a fuzzer can wait for.
schema = schemathesis.openapi.from_dict(ROUTES.openapi).exclude(path_regex=r":watch$")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    ready = threading.Event()
    stop = threading.Event()
    found: list[str] = []

    async def main() -> None:
        services = [CatalogService(seed(MemoryStore())), OrderService(), PaymentService()]
        async with keel.testing.cluster(*services) as running:
            targets = {name: running.address(name) for name in running.servers}
            app = Gateway(ROUTES, targets=targets, settings=Settings(default_timeout=5))
            server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0))
            task = asyncio.ensure_future(server.serve())
            while not server.started:
                await asyncio.sleep(0.01)
            found.append(f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}")
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            server.should_exit = True
            await task

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30), "gateway did not start"
    yield found[0]
    stop.set()
    thread.join(30)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_errors(case: schemathesis.Case[Any], base_url: str) -> None:
    response = case.call(base_url=base_url, timeout=10)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), content_type
    if response.status_code >= 400:  # a google.rpc.Status in proto JSON's words, not Python's
        error = response.json()
        assert set(error) == {"code", "message", "details"}, error
        for python in ("invalid literal", "bytes-like", "Traceback", "object has no attribute"):
            assert python not in error["message"], error
