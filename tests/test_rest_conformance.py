"""HttpRule conformance of REST served by the service itself (`keel.Server(rest_port=...)`).

Every case of tests/test_gateway_conformance.py runs again here, against the conformance
service's own REST port instead of a gateway in front of it: the same requests must give the
same answers, with no gRPC hop between the HTTP request and the method.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import keel
import pytest
from keel.runtime.config import Settings
from prometheus_client import REGISTRY

import tests.test_gateway_conformance as conformance
from tests.test_gateway import _DIRECT
from tests.test_gateway_conformance import *  # noqa: F403 (the cases, each run here again)
from tests.test_gateway_conformance import SERVICE, _mirror_service

# Cases that do not depend on where REST is served (the generated documents), and the gateway's
# client-side metrics case (here: the server's count, below).
del test_openapi_document_is_valid_and_complete  # noqa: F821
del test_the_conformance_protos_cover_every_http_rule_form  # noqa: F821
del test_a_stream_failing_after_its_first_message_is_counted_once  # noqa: F821


@asynccontextmanager
async def _in_service(generated: Path, settings: Settings) -> AsyncIterator[str]:
    """The mirror service with its REST routes on a port of its own, in this process."""
    module = importlib.import_module("conformance.v1.http_keel")
    server = keel.Server([_mirror_service(module)], port=0, rest_port=0, keys=settings)
    async with server:
        yield f"http://127.0.0.1:{server.rest_port}"


@pytest.fixture(autouse=True)
def _served_by_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cases that start their own gateway (with other settings) get the service instead."""
    monkeypatch.setattr(conformance, "_gateway", _in_service)


@pytest.fixture  # type: ignore[no-redef]
async def gateway(generated: Path) -> AsyncIterator[str]:
    async with _in_service(generated, Settings()) as url:
        yield url


def _stream_calls(code: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": "Stream", "grpc_code": code}
    labels["grpc_type"] = "server_stream"
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


async def test_a_failing_stream_is_counted_once_by_the_server(gateway: str) -> None:
    codes = [code.name for code in grpc.StatusCode]
    before = {code: _stream_calls(code) for code in codes}
    url = f"{gateway}/v1/stream/s1?count=3&name=fail-after-first"
    lines = await asyncio.to_thread(lambda: _DIRECT.open(url, timeout=10).read().splitlines())
    assert json.loads(lines[0])["result"]["name"] == "fail-after-first"
    assert json.loads(lines[-1])["error"]["code"] == grpc.StatusCode.ABORTED.value[0]
    counted = {code: _stream_calls(code) - before[code] for code in codes}
    assert {code: n for code, n in counted.items() if n} == {"ABORTED": 1}


@asynccontextmanager
async def _waiting_stream(generated: Path) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A service whose Stream sends one message, then waits until it is cancelled."""
    module = importlib.import_module("conformance.v1.http_keel")
    cancelled = asyncio.Event()

    class Waiting(module.HttpRuleServiceBase):  # type: ignore[misc,name-defined]
        async def stream(self, request: Any, context: keel.Context) -> AsyncIterator[Any]:
            yield request
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

    async with keel.Server([Waiting()], port=0, rest_port=0) as server:
        yield f"http://127.0.0.1:{server.rest_port}", cancelled


async def test_a_client_leaving_a_stream_cancels_the_method(generated: Path) -> None:
    before = _stream_calls("CANCELLED")
    async with _waiting_stream(generated) as (url, cancelled):

        def first_event() -> str:
            request = urllib.request.Request(
                f"{url}/v1/stream/s1?count=1", headers={"accept": "text/event-stream"}
            )
            with _DIRECT.open(request, timeout=10) as response:  # closed after one line
                assert response.headers["content-type"] == "text/event-stream"
                return str(response.readline().decode())

        line = await asyncio.to_thread(first_event)
        assert line.startswith('data: {"result":')
        await asyncio.wait_for(cancelled.wait(), 10)
        deadline = asyncio.get_running_loop().time() + 10
        while _stream_calls("CANCELLED") == before:  # counted as the method ends
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
    assert _stream_calls("CANCELLED") - before == 1
