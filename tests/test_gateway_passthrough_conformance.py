"""HttpRule conformance through `keel gateway` passing requests through to REST in the service.

Every case of tests/test_gateway_conformance.py runs again here, against a real gateway (uvicorn)
whose upstream is the conformance service's own REST port (KEEL_GATEWAY_UPSTREAM=rest): the
gateway matches the route and passes the request through, the service transcodes and answers.
The same requests must give the same answers as through the transcoding gateway.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import keel
import pytest
from keel.gateway import Gateway, RouteTable
from keel.runtime.config import Settings

import tests.test_gateway_conformance as conformance
from tests.conftest import serve_asgi
from tests.test_gateway import call
from tests.test_gateway_conformance import *  # noqa: F403 (the cases, each run here again)
from tests.test_gateway_conformance import SERVICE, _body, _mirror_service

# Cases that do not depend on how requests reach the service (the generated documents), the
# gateway's gRPC client metrics (a passed request makes no gRPC call), and the header case,
# rewritten below (the service appends the gateway's address to X-Forwarded-For too).
del test_openapi_document_is_valid_and_complete  # noqa: F821
del test_the_conformance_protos_cover_every_http_rule_form  # noqa: F821
del test_a_stream_failing_after_its_first_message_is_counted_once  # noqa: F821
del test_headers_travel_as_metadata  # noqa: F821


@asynccontextmanager
async def _passing(generated: Path, settings: Settings) -> AsyncIterator[str]:
    """The mirror service serving REST in this process, and a gateway passing through to it."""
    module = importlib.import_module("conformance.v1.http_keel")
    server = keel.Server([_mirror_service(module)], port=0, rest_port=0, keys=settings)
    async with server:
        routes = RouteTable.from_generated(generated)
        app = Gateway(
            routes,
            settings=settings,
            rest_targets={SERVICE: f"127.0.0.1:{server.rest_port}"},
            upstream="rest",
        )
        async with serve_asgi(app) as url:
            yield url


@pytest.fixture(autouse=True)
def _passed_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cases that start their own gateway (with other settings) get this one instead."""
    monkeypatch.setattr(conformance, "_gateway", _passing)


@pytest.fixture  # type: ignore[no-redef]
async def gateway(generated: Path) -> AsyncIterator[str]:
    async with _passing(generated, Settings()) as url:
        yield url


async def test_headers_travel_to_the_service(gateway: str) -> None:
    headers = {
        "x-request-id": "req-1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "authorization": "Bearer abc",
        "grpc-metadata-tenant": "acme",
        "x-forwarded-for": "203.0.113.7",
    }
    reply = await call(f"{gateway}/v1/items/i1", headers=headers)
    seen = _body(reply)["seen"]
    assert reply.headers["x-request-id"] == "req-1"
    assert seen["x-request-id"] == "req-1"
    assert seen["traceparent"] == headers["traceparent"]
    assert seen["authorization"] == "Bearer abc"
    assert seen["tenant"] == "acme"
    # The gateway appends its client, the service the gateway (both 127.0.0.1 here).
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1, 127.0.0.1"
