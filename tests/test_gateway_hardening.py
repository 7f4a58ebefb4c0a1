"""The edge under hostile or unusual requests, and what it observes: a real uvicorn gateway in
front of the real example services."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from tests.conftest import REPO
from tests.test_gateway import call, shop_gateway


@pytest.fixture
async def gateway() -> AsyncIterator[str]:
    async with shop_gateway() as url:
        yield url


ORDER = {
    "customerId": "c_1",
    "paymentMethodToken": "tok_visa",
    "lines": [{"productId": "p_mug", "quantity": 1}],
}


async def _raw(url: str, request: bytes) -> tuple[int, bytes]:
    """Send `request` bytes as they are (no client-side path normalisation); status and body."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize(
    "path",
    [
        "/v1/products/../orders",
        "/v1/products/%2e%2e",
        "/v1/products/%2E",
        "/v1/products/.",
        "/v1/orders/..:watch",
        "/v1/products/%FF",
        "/v1/products/caf%C3",
    ],
)
async def test_dot_segments_and_broken_utf8_are_refused(gateway: str, path: str) -> None:
    status, body = await _raw(gateway, f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    assert status == 400, body
    error = json.loads(body)
    assert error["code"] == 3
    assert "segment" in error["message"]


async def test_utf8_paths_still_reach_the_service(gateway: str) -> None:
    reply = await call(f"{gateway}/v1/products/caf%C3%A9")
    assert reply.status == 404  # decoded as UTF-8 and looked up: no such product
    assert "café" in reply.body["message"]  # type: ignore[index]


async def test_binary_metadata_headers_must_be_base64(gateway: str) -> None:
    bad = await call(f"{gateway}/v1/products/p_mug", headers={"Grpc-Metadata-Trace-Bin": "%%%"})
    assert bad.status == 400
    assert "base64" in bad.body["message"]  # type: ignore[index]
    encoded = base64.b64encode(b"\x00\xff").decode()
    good = await call(f"{gateway}/v1/products/p_mug", headers={"Grpc-Metadata-Trace-Bin": encoded})
    assert good.status == 200


@pytest.mark.parametrize("name", ["Authorization", "X-Request-Id", "X-Forwarded-For"])
async def test_metadata_the_gateway_sets_cannot_be_sent_twice(gateway: str, name: str) -> None:
    reply = await call(f"{gateway}/v1/products/p_mug", headers={f"Grpc-Metadata-{name}": "x"})
    assert reply.status == 400
    assert f"grpc-metadata-{name.lower()}" in reply.body["message"]  # type: ignore[index]


async def test_preflight_without_cors_is_405_with_a_true_allow(gateway: str) -> None:
    headers = {"Origin": "https://shop.example", "Access-Control-Request-Method": "PATCH"}
    reply = await call(f"{gateway}/v1/products/p_mug", "OPTIONS", headers=headers)
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, PATCH"
    unknown = await call(f"{gateway}/v1/nothing", "OPTIONS", headers=headers)
    assert unknown.status == 404


def _count(metric: str, method: str, code: str) -> float:
    labels = {"grpc_service": "acme.orders.v1.OrderService", "grpc_method": method}
    labels.update(grpc_code=code, grpc_type="server_stream")
    return REGISTRY.get_sample_value(metric, labels) or 0.0


async def _order(gateway: str) -> str:
    reply = await call(f"{gateway}/v1/orders", "POST", ORDER)
    assert reply.status == 200, reply
    order_id: str = reply.body["order"]["orderId"]  # type: ignore[index]
    return order_id


async def test_a_client_leaving_a_stream_cancels_the_upstream_call(
    gateway: str, caplog: pytest.LogCaptureFixture
) -> None:
    order_id = await _order(gateway)
    before = _count("grpc_server_handled_total", "WatchOrder", "CANCELLED")
    client_before = _count("grpc_client_handled_total", "WatchOrder", "CANCELLED")
    host, port = gateway.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /v1/orders/{order_id}:watch HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    await reader.readuntil(b"ORDER_STATE_CONFIRMED")  # the first update
    caplog.set_level(logging.ERROR)
    writer.close()  # the client goes away mid-stream
    for _ in range(500):  # wait for the condition: the server saw the call cancelled
        if _count("grpc_server_handled_total", "WatchOrder", "CANCELLED") > before:
            break
        await asyncio.sleep(0.01)
    assert _count("grpc_server_handled_total", "WatchOrder", "CANCELLED") == before + 1
    assert _count("grpc_client_handled_total", "WatchOrder", "CANCELLED") == client_before + 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_one_trace_from_the_edge_through_every_service(
    spans: InMemorySpanExporter,
) -> None:
    async with shop_gateway() as url:
        reply = await call(f"{url}/v1/orders", "POST", ORDER)
        assert reply.status == 200
    finished = spans.get_finished_spans()
    edge = [s for s in finished if s.name == "POST /v1/orders"]
    assert len(edge) == 1
    assert edge[0].kind == SpanKind.SERVER
    assert edge[0].attributes is not None
    assert edge[0].attributes["http.response.status_code"] == 200
    trace = [s for s in finished if s.context.trace_id == edge[0].context.trace_id]
    names = {(s.name, s.kind) for s in trace}
    for method in (
        "acme.orders.v1.OrderService/CreateOrder",
        "acme.catalog.v1.CatalogService/ReserveStock",
        "acme.payments.v1.PaymentService/AuthorizePayment",
    ):
        assert (method, SpanKind.CLIENT) in names
        assert (method, SpanKind.SERVER) in names
    by_id = {s.context.span_id: s for s in trace}
    create = next(s for s in trace if s.name.endswith("CreateOrder") and s.kind == SpanKind.SERVER)
    chain = [create]
    while chain[-1].parent is not None:
        chain.append(by_id[chain[-1].parent.span_id])
    assert [s.kind for s in chain] == [SpanKind.SERVER, SpanKind.CLIENT, SpanKind.SERVER]
    assert chain[-1] is edge[0]


_RENDER = """
import json, sys
from pathlib import Path
from google.protobuf import any_pb2
from google.rpc import status_pb2
from keel.gateway import status
from keel.gateway.routes import RouteTable

RouteTable.from_generated(Path(sys.argv[1]))
details = [any_pb2.Any(type_url="type.googleapis.com/" + name) for name in sys.argv[2:]]
print(status.from_status(status_pb2.Status(code=3, message="m", details=details)).decode())
"""
_GOOGLE_RPC = [
    f"google.rpc.{name}"
    for name in (
        "BadRequest",
        "ErrorInfo",
        "RetryInfo",
        "DebugInfo",
        "QuotaFailure",
        "PreconditionFailure",
        "RequestInfo",
        "ResourceInfo",
        "Help",
        "LocalizedMessage",
        "Status",
        "context.AttributeContext",
        "context.AuditContext",
    )
]


def test_every_detail_type_renders_in_a_gateway_process_of_its_own() -> None:
    """A fresh process that loaded only the generated code renders every google.rpc detail and
    every generated message (here from a file with no service), and keeps unknown ones."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    generated = ["kitchen.shared.v1.Ref", "kitchen.shared.v1.Money"]
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _RENDER,
            str(REPO / "tests" / "golden" / "out"),
            *_GOOGLE_RPC,
            *generated,
            "nowhere.v1.Unknown",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    details = json.loads(done.stdout)["details"]
    assert [d["@type"].rpartition("/")[2] for d in details] == [
        *_GOOGLE_RPC,
        *generated,
        "nowhere.v1.Unknown",
    ]
    assert [d for d in details if "value" in d] == [details[-1]]  # only the unknown one is raw
