"""The AsyncAPI 3.0 document keel gen writes, checked structurally, and served by the gateway."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from keel.gateway.endpoints import NO_EVENTS
from keel.gateway.routes import RouteTable

from tests.conftest import BIN, GOLDEN, REPO, answers, free_port

DOCUMENTS = [GOLDEN / "out" / "asyncapi.json", REPO / "gen" / "asyncapi.json"]
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for escaped in ref[2:].split("/"):
        part = escaped.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), ref
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def check_asyncapi(document: dict[str, Any]) -> None:
    """The required fields of AsyncAPI 3.0 and the ones Keel promises; every $ref resolves."""
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"]
    assert document["info"]["version"]
    for ref in _refs(document):
        _resolve(document, ref)
    for key, channel in document["channels"].items():
        assert channel["address"] == key  # a subject
        assert channel["messages"]
        for message in channel["messages"].values():
            resolved = _resolve(document, message["$ref"])
            assert resolved["x-proto-type"] == resolved["title"]
            assert resolved["payload"]["$ref"].endswith(f"/{resolved['x-proto-type']}")
            headers = _resolve(document, resolved["headers"]["$ref"])
            assert {"Nats-Msg-Id", "x-request-id", "traceparent"} <= set(headers["properties"])
    for operation in document["operations"].values():
        assert operation["action"] in ("send", "receive")
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:  # an operation's messages are its channel's
            assert message["$ref"].startswith(f"{channel}/messages/")


@pytest.mark.parametrize("path", DOCUMENTS, ids=["golden", "shop"])
def test_documents_are_asyncapi_3(path: Path) -> None:
    check_asyncapi(json.loads(path.read_text()))


def test_golden_document_names_subjects_streams_services_and_payloads() -> None:
    document = json.loads(DOCUMENTS[0].read_text())
    assert sorted(document["channels"]) == [
        "kitchen.pantry.v1.money_spent",
        "kitchen.v1.dish.burnt",
        "kitchen.v1.dish.cooked-and_served",
    ]
    assert document["channels"]["kitchen.v1.dish.burnt"]["x-keel-stream"] == "KITCHEN_V1"
    actions = {
        (op["x-keel-service"], op["action"], op["channel"]["$ref"].rsplit("/", 1)[1])
        for op in document["operations"].values()
    }
    assert actions == {
        ("kitchen.v1.KitchenService", "send", "kitchen.v1.dish.cooked-and_served"),
        ("kitchen.v1.KitchenService", "send", "kitchen.v1.dish.burnt"),
        ("kitchen.v1.KitchenService", "receive", "kitchen.pantry.v1.money_spent"),
        ("kitchen.v1.PantryService", "receive", "kitchen.v1.dish.cooked-and_served"),
        ("kitchen.v1.PantryService", "receive", "kitchen.pantry.v1.money_spent"),
    }
    message = document["components"]["messages"]["kitchen.v1.DishCooked"]
    assert message["summary"] == "A dish is ready."
    assert message["contentType"] == "application/x-protobuf"
    schemas = document["components"]["schemas"]
    cooked = schemas["kitchen.v1.DishCooked"]["properties"]
    assert cooked["cookedAt"] == {"type": "string", "format": "date-time"}  # the JSON mapping
    assert cooked["dish"] == {"$ref": "#/components/schemas/kitchen.v1.Dish"}
    assert schemas["kitchen.pantry.v1.MoneySpent"]["properties"]["amount"] == {
        "$ref": "#/components/schemas/kitchen.shared.v1.Money"
    }
    assert schemas["kitchen.shared.v1.Money"]["properties"]["units"]["type"] == "string"  # int64


def test_shop_document_has_the_orders_events_and_their_subscriber() -> None:
    document = json.loads(DOCUMENTS[1].read_text())
    assert set(document["channels"]) >= {
        "acme.orders.v1.order.placed",
        "acme.orders.v1.order.cancelled",
    }
    services = {
        (op["x-keel-service"], op["action"], op["channel"]["$ref"].rsplit("/", 1)[1])
        for op in document["operations"].values()
    }
    assert ("acme.catalog.v1.CatalogService", "receive", "acme.orders.v1.order.placed") in services
    assert ("acme.orders.v1.OrderService", "send", "acme.orders.v1.order.cancelled") in services


def test_route_table_loads_the_document_and_an_empty_one_is_valid() -> None:
    routes = RouteTable.from_generated(GOLDEN / "out")
    assert routes.asyncapi == json.loads(DOCUMENTS[0].read_text())
    check_asyncapi(NO_EVENTS)


def _get(url: str) -> tuple[int, bytes]:
    with _DIRECT.open(url, timeout=10) as response:
        return response.status, response.read()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`keel gateway` over the golden outputs in its own process; yields its URL once it answers
    /healthz (no upstream is called)."""
    folder = tmp_path_factory.mktemp("gateway")
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
    log = folder / "gateway.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "keel"), "gateway", "--gen", str(GOLDEN / "out"), "--port", str(port)],
            cwd=folder,
            env=clean,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not answers(f"{url}/healthz"):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_docs_page_links_and_lists_the_events(gateway: str) -> None:
    status, page = _get(f"{gateway}/docs")
    assert status == 200
    assert b'<a href="openapi.json">' in page
    assert b'<a href="asyncapi.json">' in page
    assert b"fetch('asyncapi.json')" in page  # the Events tab renders the document
    # The System tab's diagram: the event from its publisher to its subscriber.
    kitchen, pan = b"s_kitchen_2e_v1_2e_KitchenService", b"s_kitchen_2e_v1_2e_Pan"
    assert kitchen + b" -. &quot;DishCooked&quot; .-&gt; " + pan in page
    assert page.rstrip().endswith(b"</html>")


def test_gateway_serves_the_asyncapi_document_next_to_openapi(gateway: str) -> None:
    status, body = _get(f"{gateway}/asyncapi.json")
    assert status == 200
    assert json.loads(body) == json.loads(DOCUMENTS[0].read_text())
    status, body = _get(f"{gateway}/openapi.json")
    assert status == 200
    assert "/v1/dishes" in json.loads(body)["paths"]
