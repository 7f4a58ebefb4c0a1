"""The REST gateway: a real uvicorn server in front of the real example services."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keel.testing
import pytest
from catalog.service import CatalogService
from catalog.store import MemoryStore, seed
from keel.gateway import Gateway, RouteTable
from keel.gateway.app import grpc_timeout
from keel.runtime.spec import ServiceSpec
from orders.service import OrderService
from payments.service import PaymentService
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, serve_asgi, shop_routes

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: object


@asynccontextmanager
async def shop_gateway(**options: Any) -> AsyncIterator[str]:
    """A gateway (`options` for keel.gateway.Gateway) in front of the three example services
    (their routes alone: the workspace's other services are not started here)."""
    services = [CatalogService(seed(MemoryStore())), OrderService(), PaymentService()]
    async with keel.testing.cluster(*services) as running:
        routes = shop_routes()
        assert {service.name for service in routes.services} == set(running.servers)
        targets = {name: running.address(name) for name in running.servers}
        async with serve_asgi(Gateway(routes, targets=targets, **options)) as url:
            yield url


@pytest.fixture
async def gateway() -> AsyncIterator[str]:
    async with shop_gateway(max_body_bytes=4096) as url:
        yield url


async def call(
    url: str, method: str = "GET", body: object = None, headers: dict[str, str] | None = None
) -> Reply:
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})

    def send() -> Reply:
        try:
            with _DIRECT.open(request, timeout=10) as response:
                return Reply(response.status, dict(response.headers), json.loads(response.read()))
        except urllib.error.HTTPError as error:
            return Reply(error.code, dict(error.headers), json.loads(error.read()))

    return await asyncio.to_thread(send)


async def test_get_with_path_variable_and_response_body(gateway: str) -> None:
    reply = await call(f"{gateway}/v1/products/p_mug")
    assert reply.status == 200
    assert reply.body["title"] == "Mug"  # type: ignore[index]
    assert reply.body["priceCents"] == "899"  # type: ignore[index]  # int64 as a string


async def test_query_parameters_by_json_or_proto_name(gateway: str) -> None:
    first = await call(f"{gateway}/v1/products?pageSize=2")
    assert [p["productId"] for p in first.body["products"]] == ["p_kettle", "p_mug"]  # type: ignore[index]
    token = first.body["nextPageToken"]  # type: ignore[index]
    second = await call(f"{gateway}/v1/products?page_size=2&page_token={token}")
    assert [p["productId"] for p in second.body["products"]] == ["p_teapot"]  # type: ignore[index]


async def test_post_body_star_then_custom_verb_and_response_body_list(gateway: str) -> None:
    order = {
        "customerId": "c_1",
        "lines": [{"productId": "p_kettle", "quantity": 1}],
        "payment_method_token": "tok_visa",
    }
    created = await call(f"{gateway}/v1/orders", "POST", order)
    assert created.status == 200
    order_id = created.body["order"]["orderId"]  # type: ignore[index]
    assert created.body["order"]["state"] == "ORDER_STATE_CONFIRMED"  # type: ignore[index]
    listed = await call(f"{gateway}/v1/customers/c_1/orders")
    assert [o["orderId"] for o in listed.body] == [order_id]  # type: ignore[attr-defined]
    cancelled = await call(f"{gateway}/v1/orders/{order_id}:cancel", "POST", {"reason": "oops"})
    assert cancelled.body["order"]["state"] == "ORDER_STATE_CANCELLED"  # type: ignore[index]
    via_binding = await call(f"{gateway}/v1/customers/c_1/orders/{order_id}")
    assert via_binding.body["order"]["orderId"] == order_id  # type: ignore[index]


async def test_patch_with_body_field(gateway: str) -> None:
    reply = await call(
        f"{gateway}/v1/products/p_mug?update_mask=title", "PATCH", {"title": "Big mug"}
    )
    assert reply.status == 200, reply.body
    assert reply.body["product"]["title"] == "Big mug"  # type: ignore[index]


async def test_grpc_errors_map_to_http_with_details(gateway: str) -> None:
    missing = await call(f"{gateway}/v1/products/p_nope")
    assert missing.status == 404
    assert missing.body["code"] == 5  # type: ignore[index]
    assert "p_nope" in missing.body["message"]  # type: ignore[index]
    invalid = await call(f"{gateway}/v1/orders", "POST", {"customerId": "c_1"})
    assert invalid.status == 400
    details = invalid.body["details"]  # type: ignore[index]
    bad_request = next(d for d in details if d["@type"].endswith("google.rpc.BadRequest"))
    fields = {v["field"] for v in bad_request["fieldViolations"]}
    assert {"lines", "paymentMethodToken"} <= fields  # JSON names, as the client sent them


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("POST", "/v1/orders", b"{not json", 400, "not valid JSON"),
        ("POST", "/v1/orders", [1, 2], 400, "must be a JSON object"),
        ("POST", "/v1/orders", {"lines": [{"quantity": "many"}]}, 400, "quantity"),
        ("POST", "/v1/orders", {"colour": "red"}, 400, "colour"),
        ("GET", "/v1/products?colour=red", None, 400, "colour"),
        ("POST", "/v1/orders", {"customerId": "x" * 5000}, 413, "larger than 4096 bytes"),
        ("GET", "/v1/nothing/here", None, 404, "no route"),
        ("GET", "/v1/catalog.v1.CatalogService/ReserveStock", None, 404, "no route"),
    ],
    ids=[
        "malformed",
        "not-object",
        "wrong-type",
        "unknown-field",
        "unknown-query",
        "too-big",
        "unknown-route",
        "internal-method",
    ],
)
async def test_bad_input_is_4xx_json_naming_the_problem(
    gateway: str, *, method: str, path: str, body: object, status: int, says: str
) -> None:
    reply = await call(f"{gateway}{path}", method, body)
    assert reply.status == status
    assert says in reply.body["message"]  # type: ignore[index]


async def test_wrong_method_is_405_with_allow(gateway: str) -> None:
    reply = await call(f"{gateway}/v1/products/p_mug", "DELETE")
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, PATCH"


async def test_request_id_is_echoed_or_created(gateway: str) -> None:
    given = await call(f"{gateway}/v1/products/p_mug", headers={"X-Request-Id": "req-9"})
    assert given.headers["x-request-id"] == "req-9"
    created = await call(f"{gateway}/v1/products/p_mug")
    assert len(created.headers["x-request-id"]) == 32


def test_grpc_timeout_header() -> None:
    assert grpc_timeout("5S") == 5.0
    assert grpc_timeout("250m") == 0.25
    assert grpc_timeout("soon") is None


def test_only_annotated_methods_have_routes() -> None:
    routes = RouteTable.from_generated(Path(REPO / "gen"))
    paths = {route.method.path for route in routes.routes}
    assert "/acme.orders.v1.OrderService/CreateOrder" in paths
    for internal in ("ReserveStock", "ReleaseStock", "MarkShipped", "AuthorizePayment"):
        assert not any(p.endswith(f"/{internal}") for p in paths)


def test_a_mistyped_custom_method_finds_the_one_meant() -> None:
    routes = RouteTable.from_generated(Path(REPO / "gen"))
    mug = "/v1/products/p_mug"
    assert routes.custom_methods(f"{mug}:restok") == [f"POST {mug}:restock"]
    # None close by name: every custom method of the resource.
    assert routes.custom_methods(f"{mug}:frobnicate") == [
        f"POST {mug}:archive",
        f"POST {mug}:restock",
        f"POST {mug}:unarchive",
    ]
    assert routes.custom_methods(mug) == []
    assert routes.custom_methods("/v1/nothing/here:restock") == []


def _stream_lines(
    url: str, after_first: Callable[[], None], accept: str = ""
) -> tuple[str, list[str]]:
    """Read a streamed response line by line; call `after_first` once the first line is in."""
    headers = {"Accept": accept} if accept else {}
    request = urllib.request.Request(url, headers=headers)
    lines: list[str] = []
    with _DIRECT.open(request, timeout=10) as response:
        kind = response.headers["content-type"]
        for line in response:
            lines.append(line.decode().rstrip("\n"))
            if len(lines) == 1:
                after_first()
    return kind, lines


def _shipper(order_id: str) -> Callable[[], None]:
    """Ship the order through gRPC, from the reading thread, on the test's event loop."""
    from acme.orders.v1 import orders_keel, orders_pb2  # noqa: PLC0415
    from keel.runtime import config  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    address = config.current().targets["ACME_ORDERS_V1_ORDERSERVICE"]

    async def ship() -> None:
        async with orders_keel.OrderServiceClient.connect(address) as orders:
            await orders.mark_shipped(orders_pb2.MarkShippedRequest(order_id=order_id))

    return lambda: asyncio.run_coroutine_threadsafe(ship(), loop).result(10)


async def _new_order(gateway: str) -> str:
    order = {
        "customerId": "c_1",
        "lines": [{"productId": "p_mug", "quantity": 1}],
        "paymentMethodToken": "tok_visa",
    }
    created = await call(f"{gateway}/v1/orders", "POST", order)
    return str(created.body["order"]["orderId"])  # type: ignore[index]


async def test_server_streaming_as_ndjson(gateway: str) -> None:
    order_id = await _new_order(gateway)
    url = f"{gateway}/v1/orders/{order_id}:watch"
    kind, lines = await asyncio.to_thread(_stream_lines, url, _shipper(order_id))
    assert kind == "application/x-ndjson"
    states = [json.loads(line)["result"]["order"]["state"] for line in lines]
    assert states == ["ORDER_STATE_CONFIRMED", "ORDER_STATE_SHIPPED"]


async def test_server_streaming_as_server_sent_events(gateway: str) -> None:
    order_id = await _new_order(gateway)
    url = f"{gateway}/v1/orders/{order_id}:watch"
    kind, lines = await asyncio.to_thread(
        _stream_lines, url, _shipper(order_id), "text/event-stream"
    )
    assert kind == "text/event-stream"
    events = [
        json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")
    ]
    assert [e["result"]["order"]["state"] for e in events] == [
        "ORDER_STATE_CONFIRMED",
        "ORDER_STATE_SHIPPED",
    ]


async def test_stream_failing_before_its_first_message_is_an_http_error(gateway: str) -> None:
    reply = await call(f"{gateway}/v1/orders/o_missing:watch")
    assert reply.status == 404
    assert reply.body["code"] == 5  # type: ignore[index]


async def test_health_readiness_and_metrics(gateway: str) -> None:
    assert (await call(f"{gateway}/healthz")).body == {"status": "ok"}
    assert (await call(f"{gateway}/readyz")).body == {"status": "ready"}

    def metrics() -> str:
        with _DIRECT.open(f"{gateway}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def handled(text: str, code: str) -> float:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if (
                    sample.name == "grpc_client_handled_total"
                    and labels.get("grpc_method") == "GetProduct"
                    and labels.get("grpc_code") == code
                ):
                    return float(sample.value)
        return 0.0

    before = await asyncio.to_thread(metrics)
    assert "python_info" in before
    await call(f"{gateway}/v1/products/p_mug")
    await call(f"{gateway}/v1/products/p_none")
    after = await asyncio.to_thread(metrics)
    # Upstream calls are counted under go-grpc-prometheus' client names, by status.
    assert handled(after, "OK") == handled(before, "OK") + 1
    assert handled(after, "NOT_FOUND") == handled(before, "NOT_FOUND") + 1


async def test_readyz_is_503_when_an_upstream_is_down() -> None:
    routes = RouteTable.from_generated(REPO / "gen")
    app = Gateway(routes, default_target="127.0.0.1:1")
    async with serve_asgi(app) as url:
        reply = await call(f"{url}/readyz")
        unavailable = await call(f"{url}/v1/products/p_mug")
    assert reply.status == 503
    assert "acme.catalog.v1.CatalogService" in reply.body["not_serving"]  # type: ignore[index]
    assert unavailable.status == 503
    assert unavailable.body["code"] == 14  # type: ignore[index]


async def test_patch_without_mask_updates_only_the_fields_sent(gateway: str) -> None:
    reply = await call(f"{gateway}/v1/products/p_teapot", "PATCH", {"priceCents": "3000"})
    assert reply.status == 200, reply.body
    product = reply.body["product"]  # type: ignore[index]
    assert (product["title"], product["priceCents"]) == ("Teapot", "3000")  # title untouched


def test_generated_openapi_documents_are_valid_openapi_3_1() -> None:
    from openapi_spec_validator import validate  # noqa: PLC0415

    generated = REPO / "gen" / "openapi"
    golden = REPO / "tests" / "golden" / "out" / "openapi"
    routes = RouteTable.from_generated(REPO / "gen")
    # One document per proto file with a REST route (none stale), the shop's among them.
    routed = {Path(s.file).with_suffix(".json") for s in routes.services if _routed(s)}
    found = {d.relative_to(generated) for d in generated.rglob("*.json")}
    assert found == routed
    shop = {Path(f"acme/{name}/v1/{name}.json") for name in ("catalog", "orders", "payments")}
    assert shop <= found
    documents = [generated / d for d in sorted(found)] + sorted(golden.rglob("*.json"))
    assert golden / "kitchen/v1/kitchen.json" in documents
    for document in documents:
        validate(json.loads(document.read_text()))
    validate(routes.openapi)


def _routed(service: ServiceSpec) -> bool:
    return any(method.http for method in service.methods)


def test_openapi_describes_routes_schemas_and_security() -> None:
    doc = json.loads((REPO / "gen/openapi/acme/catalog/v1/catalog.json").read_text())
    get = doc["paths"]["/v1/products/{product_id}"]["get"]
    assert get["security"] == []  # ACCESS_PUBLIC
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/acme.catalog.v1.Product"  # response_body: product
    }
    create = doc["paths"]["/v1/products"]["post"]
    assert create["security"] == [{"bearer": ["catalog.write"]}]
    product = doc["components"]["schemas"]["acme.catalog.v1.Product"]
    assert product["properties"]["priceCents"]["type"] == "string"  # int64 in proto3 JSON
    assert product["properties"]["productId"]["readOnly"] is True  # OUTPUT_ONLY
    assert product["required"] == ["title"]  # field_behavior REQUIRED
    assert (
        "Price in the smallest currency unit" in product["properties"]["priceCents"]["description"]
    )
    listing = doc["paths"]["/v1/products"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"pageSize", "pageToken", "showArchived"}
    kitchen = json.loads((REPO / "tests/golden/out/openapi/kitchen/v1/kitchen.json").read_text())
    # /v1/dishes/{name=dishes/*}:follow: one parameter per *, named after its collection
    assert "/v1/dishes/dishes/{dish}:follow" in kitchen["paths"]


async def test_gateway_serves_openapi_and_docs(gateway: str) -> None:
    doc = await call(f"{gateway}/openapi.json")
    assert doc.status == 200
    assert "/v1/orders" in doc.body["paths"]  # type: ignore[index]

    def page() -> str:
        with _DIRECT.open(f"{gateway}/docs", timeout=10) as response:
            return str(response.read().decode())

    assert "SwaggerUIBundle({url: 'openapi.json'" in await asyncio.to_thread(page)


async def test_headers_grpc_cannot_carry_are_400(gateway: str) -> None:
    # Found by the schemathesis fuzz test: such a header used to end in a 500.
    reply = await call(f"{gateway}/v1/products/p_mug", headers={"Grpc-Metadata-Note": "café"})
    assert reply.status == 400
    assert "grpc-metadata-note" not in reply.body["message"]  # type: ignore[index]
    assert "'note' has characters gRPC metadata cannot carry" in reply.body["message"]  # type: ignore[index]


@pytest.fixture
async def photo_gateway() -> AsyncIterator[str]:
    from tests.servers.kitchen_server import Photos  # noqa: PLC0415

    async with keel.testing.cluster(Photos()) as running:
        routes = RouteTable.from_generated(REPO / "tests" / "golden" / "out")
        app = Gateway(routes, default_target=running.address("kitchen.v1.PhotoService"))
        async with serve_asgi(app) as url:
            yield url


async def test_http_body_passes_through_with_its_content_type(photo_gateway: str) -> None:
    image = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    stored = await call(
        f"{photo_gateway}/v1/dishes/soup/photo", "PUT", image, {"Content-Type": "image/png"}
    )
    assert stored.body == {"size": len(image), "contentType": "image/png"}

    def fetch() -> tuple[str, bytes]:
        with _DIRECT.open(f"{photo_gateway}/v1/dishes/soup/photo", timeout=10) as response:
            return str(response.headers["content-type"]), bytes(response.read())

    assert await asyncio.to_thread(fetch) == ("image/png", image)
    missing = await call(f"{photo_gateway}/v1/dishes/stew/photo")
    assert missing.status == 404
