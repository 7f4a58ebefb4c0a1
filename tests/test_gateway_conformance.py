"""HttpRule conformance: the whole google.api.http grammar through a real gateway.

tests/conformance/proto declares one rpc per part of the grammar; its server answers each call
with the request as it arrived, the metadata the call brought and the seconds left to its
deadline, so each test reads exactly how the gateway built the gRPC call.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import keel
import keel.testing
import pytest
from keel.gateway import Gateway, RouteTable
from keel.runtime.config import Settings
from openapi_spec_validator import validate
from prometheus_client import REGISTRY

from tests.conftest import REPO, serve_asgi
from tests.test_gateway import _DIRECT, Reply, call

PROTOS = REPO / "tests" / "conformance" / "proto"
SERVICE = "conformance.v1.HttpRuleService"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`keel gen` over the conformance protos, importable."""
    out = tmp_path_factory.mktemp("conformance-gen")
    keel_bin = str(Path(sys.executable).parent / "keel")
    subprocess.run(
        [keel_bin, "gen", "--workspace", str(PROTOS), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(out))
    yield out
    sys.path.remove(str(out))
    for name in [m for m in sys.modules if m.startswith("conformance")]:
        del sys.modules[name]


def _mirror_service(module: ModuleType) -> keel.ServiceBase:
    """An HttpRuleService whose every method answers with what it received."""

    def answer(name: str, request: Any, context: keel.Context) -> Any:
        reply = type(request)()
        reply.CopyFrom(request)
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        reply.seen.update({**metadata, "rpc": name})
        reply.deadline_seconds = context.time_remaining() or 0.0
        return reply

    def unary(name: str) -> Callable[..., Any]:
        async def method(self: Any, request: Any, context: keel.Context) -> Any:
            return answer(name, request, context)

        return method

    async def stream(self: Any, request: Any, context: keel.Context) -> AsyncIterator[Any]:
        for n in range(request.count):
            reply = answer("stream", request, context)
            reply.count = n
            yield reply
            if request.name == "fail-after-first":
                raise keel.errors.Aborted("the stream broke")

    base = module.HttpRuleServiceBase
    names = [n for n in vars(base) if not n.startswith("_") and callable(getattr(base, n))]
    methods: dict[str, Any] = {n: unary(n) for n in names if n != "stream"}
    mirror = type("Mirror", (base,), {**methods, "stream": stream})
    service: keel.ServiceBase = mirror()
    return service


@asynccontextmanager
async def _gateway(generated: Path, settings: Settings) -> AsyncIterator[str]:
    import importlib  # noqa: PLC0415

    module = importlib.import_module("conformance.v1.http_keel")
    async with keel.testing.cluster(_mirror_service(module)) as running:
        routes = RouteTable.from_generated(generated)
        app = Gateway(routes, default_target=running.address(SERVICE), settings=settings)
        async with serve_asgi(app) as url:
            yield url


@pytest.fixture
async def gateway(generated: Path) -> AsyncIterator[str]:
    async with _gateway(generated, Settings()) as url:
        yield url


def _body(reply: Reply) -> dict[str, Any]:
    assert isinstance(reply.body, dict), reply
    return reply.body


async def _ok(url: str, method: str = "GET", body: object = None, **headers: str) -> dict[str, Any]:
    reply = await call(url, method, body, headers=headers or None)
    assert reply.status == 200, reply
    return _body(reply)


# Path templates


async def test_literal_segments(gateway: str) -> None:
    assert (await _ok(f"{gateway}/v1/literal/segments/only"))["seen"]["rpc"] == "literal"
    assert (await call(f"{gateway}/v1/literal/segments")).status == 404


async def test_single_segment_variable(gateway: str) -> None:
    answer = await _ok(f"{gateway}/v1/items/42")
    assert (answer["id"], answer["seen"]["rpc"]) == ("42", "variable")
    assert (await call(f"{gateway}/v1/items/42/extra/segments")).status == 404


async def test_a_literal_segment_wins_over_a_variable(gateway: str) -> None:
    assert (await _ok(f"{gateway}/v1/items/special"))["seen"]["rpc"] == "literal_over_variable"
    assert (await _ok(f"{gateway}/v1/items/specials"))["seen"]["rpc"] == "variable"


async def test_multi_segment_resource_name(gateway: str) -> None:
    answer = await _ok(f"{gateway}/v1/shelves/s1/books/b2")
    assert answer["name"] == "shelves/s1/books/b2"
    assert (await call(f"{gateway}/v1/shelves/s1/notes/b2")).status == 404
    assert (await call(f"{gateway}/v1/shelves/s1/books")).status == 404


async def test_nested_field_paths(gateway: str) -> None:
    answer = await _ok(f"{gateway}/v1/nested/outer/inner")
    assert answer["nested"] == {"leaf": "outer", "child": {"leaf": "inner"}}


async def test_deep_wildcard_takes_the_rest_of_the_path(gateway: str) -> None:
    assert (await _ok(f"{gateway}/v1/files/a/b/c.txt"))["path"] == "a/b/c.txt"
    assert "path" not in await _ok(f"{gateway}/v1/files")  # zero segments: empty


async def test_anonymous_wildcards_bind_nothing(gateway: str) -> None:
    answer = await _ok(f"{gateway}/v1/wild/x/end/y/z")
    assert answer["seen"]["rpc"] == "wildcards"
    assert {"id", "name", "path"}.isdisjoint(answer)
    assert (await call(f"{gateway}/v1/wild/x/y")).status == 404


async def test_custom_verb(gateway: str) -> None:
    answer = await _ok(f"{gateway}/v1/items/o1:archive", "POST", {"count": 3})
    assert (answer["id"], answer["count"], answer["seen"]["rpc"]) == ("o1", 3, "custom_verb")


async def test_a_mistyped_custom_verb_names_the_one_meant(gateway: str) -> None:
    # /v1/items/o1:archiv is item "o1:archiv" to GET /v1/items/{id}: 405 for POST, saying
    # which custom method was probably meant; a path without a custom verb gets no such hint.
    wrong = await call(f"{gateway}/v1/items/o1:archiv", "POST", {"count": 3})
    assert wrong.status == 405
    message = wrong.body["message"]  # type: ignore[index]
    assert message.endswith("; did you mean POST /v1/items/o1:archive?"), message
    plain = await call(f"{gateway}/v1/items/o1", "PUT")
    assert "did you mean" not in plain.body["message"]  # type: ignore[index]


async def test_custom_http_method(gateway: str) -> None:
    answer = await _ok(f"{gateway}/v1/items?tags=a", "SEARCH")
    assert (answer["seen"]["rpc"], answer["tags"]) == ("custom_method", ["a"])


async def test_cors_preflight_lists_custom_methods(generated: Path) -> None:
    origin = "https://app.example"
    preflight = {"origin": origin, "access-control-request-method": "SEARCH"}

    def ask(url: str) -> tuple[int, str]:
        request = urllib.request.Request(f"{url}/v1/items", method="OPTIONS", headers=preflight)
        with _DIRECT.open(request, timeout=10) as response:
            return response.status, response.headers["access-control-allow-methods"]

    async with _gateway(generated, Settings(cors_origins=origin)) as url:
        status, allowed = await asyncio.to_thread(ask, url)
    assert status == 204
    assert allowed == "SEARCH"


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/v1/items/a%2Fb%20c", "id", "a/b c"),  # one segment: fully decoded
        ("/v1/files/a%2Fb/c%20d", "path", "a%2Fb/c d"),  # several: %2F stays encoded
        ("/v1/shelves/s%201/books/b%3F", "name", "shelves/s 1/books/b?"),
        ("/v1/%69tems/caf%C3%A9", "id", "café"),  # an encoded literal still matches
    ],
)
async def test_percent_decoding(gateway: str, path: str, field: str, value: str) -> None:
    assert (await _ok(f"{gateway}{path}"))[field] == value


async def test_known_path_with_another_method_is_405_with_allow(gateway: str) -> None:
    reply = await call(f"{gateway}/v1/items/i1", "PUT")
    assert reply.status == 405
    assert reply.headers["allow"] == "DELETE, GET, PATCH"
    assert (await call(f"{gateway}/v1/literal/segments/only", "POST")).headers["allow"] == "GET"


async def test_methods_without_http_rules_are_not_routed(gateway: str) -> None:
    reply = await call(f"{gateway}/{SERVICE}/Hidden", "POST", {})
    assert reply.status == 404
    assert _body(reply)["code"] == 5


# Bodies and query parameters


async def test_body_star_takes_the_whole_body_and_no_query(gateway: str) -> None:
    body = {"name": "from body", "big": "9007199254740993", "id": "ignored"}
    answer = await _ok(f"{gateway}/v1/star/s1", "POST", body)
    assert answer["id"] == "s1"  # the path wins over the body
    assert answer["name"] == "from body"
    assert answer["big"] == "9007199254740993"  # int64 keeps every digit, as a string
    # body "*": a query parameter would be silently dropped, so it is refused.
    refused = await call(f"{gateway}/v1/star/s1?name=from-query&tags=q", "POST", body)
    assert refused.status == 400
    assert {v["field"] for v in _violations(refused)} == {"name", "tags"}


def _violations(reply: Reply) -> list[dict[str, str]]:
    """The field violations of a 400's google.rpc.BadRequest detail."""
    details = _body(reply)["details"]
    bad = [d for d in details if d["@type"] == "type.googleapis.com/google.rpc.BadRequest"]
    assert len(bad) == 1, reply
    violations: list[dict[str, str]] = bad[0]["fieldViolations"]
    return violations


async def test_path_variables_of_every_scalar_type(gateway: str) -> None:
    answer = await _ok(f"{gateway}/v1/typed/true/-9007199254740993/KIND_SHELF/0.25")
    assert (answer["flag"], answer["big"]) == (True, "-9007199254740993")
    assert (answer["kind"], answer["ratio"]) == ("KIND_SHELF", 0.25)
    assert (await _ok(f"{gateway}/v1/typed/false/1/2/NaN"))["kind"] == "KIND_SHELF"
    refused = await call(f"{gateway}/v1/typed/maybe/x0/KIND_NOPE/half")
    assert refused.status == 400
    found = {v["field"]: v["description"] for v in _violations(refused)}
    assert set(found) == {"flag", "big", "kind", "ratio"}
    assert "expected true or false" in found["flag"]
    assert "expected an integer (int64)" in found["big"]


@pytest.mark.parametrize(
    ("url", "fields", "says"),
    [
        ("/v1/query?big=1&big=2", {"big"}, "given 2 times"),
        ("/v1/query?nested.leaf=a&nested.leaf=b", {"nested.leaf"}, "given 2 times"),
        ("/v1/items/i1?id=other", {"id"}, "already set by the path"),
        ("/v1/nested/a/b?nested.leaf=c", {"nested.leaf"}, "already set by the path"),
        ("/v1/nested/a/b?nested=c", {"nested"}, "already set by the path"),
    ],
)
async def test_query_parameters_never_overwrite_or_repeat(
    gateway: str, url: str, fields: set[str], says: str
) -> None:
    reply = await call(f"{gateway}{url}")
    assert reply.status == 400, reply
    assert {v["field"] for v in _violations(reply)} == fields
    assert says in _body(reply)["message"]


async def test_query_parameters_cannot_overwrite_the_body(gateway: str) -> None:
    url = f"{gateway}/v1/items/i1/body?nested.leaf=q"
    reply = await call(url, "PUT", {"leaf": "L"})
    assert reply.status == 400, reply
    assert [v["field"] for v in _violations(reply)] == ["nested.leaf"]
    assert "already set by the body" in _body(reply)["message"]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        (b'{"count": "x0"}', "count", 'expected an integer (int32), got "x0"'),
        (b'{"name": {"a": 1}}', "name", "expected a string, got an object"),
        (b'{"nested": {"count": 1.5}}', "nested.count", "expected an integer (int32), got 1.5"),
        (b'{"tags": ["a", 2]}', "tags[1]", "expected a string, got 2"),
        (b'{"flag": "true"}', "flag", 'expected true or false, got "true"'),
        (b'{"count": 4294967296}', "count", "out of range for int32"),
        (b'{"kind": "KIND_NOPE"}', "kind", '"KIND_NOPE" is not a value of conformance.v1.Kind'),
        (b'{"blob": "not base64!"}', "blob", "expected base64 bytes"),
        (b'{"at": "yesterday"}', "at", "expected an RFC 3339 timestamp"),
        (b'{"updateMask": 3}', "update_mask", "expected a field mask"),
        (b'{"limit": "seven"}', "limit", "expected an integer (int32)"),
        (b'{"seen": {"a": 1}}', 'seen["a"]', "expected a string, got 1"),
        (b'{"count": 1, "count": 2}', "", 'the key "count" appears twice'),
        (b'{"name": "a", "name": "a"}', "", 'the key "name" appears twice'),
        (b'{"name": "a", "nested": {"leaf": 1, "leaf": 2}}', "", 'the key "leaf" appears twice'),
        (b'{"name": "a", "id": "b", "id": "b"}', "", "appears twice"),
        (b'{"ratio": NaN}', "", "NaN is not JSON"),
        (b'{"count": 1, "count_": 2}', "count_", "no such field in conformance.v1.Probe"),
    ],
)
async def test_bad_bodies_say_what_the_field_expects(
    gateway: str, body: bytes, field: str, says: str
) -> None:
    reply = await call(f"{gateway}/v1/star/s1", "POST", body, {"content-type": "application/json"})
    assert reply.status == 400, reply
    message = _body(reply)["message"]
    assert says in message
    for python in ("invalid literal", "bytes-like", "Traceback", "Error:"):
        assert python not in message
    if field:
        assert [v["field"] for v in _violations(reply)] == [field]
        assert field in message


async def test_deeply_nested_bodies_are_400(gateway: str) -> None:
    for depth in (150, 1500, 50_000):
        body = b'{"nested": ' * depth + b"{}" + b"}" * depth
        reply = await call(f"{gateway}/v1/star/s1", "POST", body)
        assert reply.status == 400, (depth, reply)
        assert "nested" in _body(reply)["message"]
        arrays = b'{"tags": ' + b"[" * depth + b"]" * depth + b"}"
        assert (await call(f"{gateway}/v1/star/s1", "POST", arrays)).status == 400


async def test_body_field_with_the_rest_from_path_and_query(gateway: str) -> None:
    url = f"{gateway}/v1/items/i1/body?name=qn&tags=a&tags=b&kind=2"
    answer = await _ok(url, "PUT", {"leaf": "L", "count": 2})
    assert answer["nested"] == {"leaf": "L", "count": 2}
    assert (answer["id"], answer["name"], answer["tags"]) == ("i1", "qn", ["a", "b"])
    assert answer["kind"] == "KIND_SHELF"  # an enum by number in the query


async def test_patch_fills_the_update_mask_from_the_body(gateway: str) -> None:
    answer = await _ok(f"{gateway}/v1/items/i1", "PATCH", {"leaf": "x", "child": {"leaf": "y"}})
    assert answer["updateMask"] == "leaf,child.leaf"
    given = await _ok(f"{gateway}/v1/items/i1?updateMask=count", "PATCH", {"leaf": "x"})
    assert given["updateMask"] == "count"  # the client's own mask is kept


async def test_delete_takes_path_and_query(gateway: str) -> None:
    answer = await _ok(f"{gateway}/v1/items/i1?flag=true", "DELETE")
    assert (answer["id"], answer["flag"], answer["seen"]["rpc"]) == ("i1", True, "delete")


async def test_every_kind_of_query_parameter(gateway: str) -> None:
    query = (
        "id=1&nested.leaf=x&nested.child.count=4&tags=a&tags=b&kind=KIND_BOOK"
        "&big=-9007199254740993&unsigned=18446744073709551615&flag=true&ratio=0.5"
        "&blob=aGk%3D&at=2024-01-02T03:04:05Z&wait=1.5s&update_mask=a,b.c&limit=7"
        "&label=hello&kinds=1&kinds=KIND_SHELF&deadline_seconds=2"
    )
    answer = await _ok(f"{gateway}/v1/query?{query}")
    assert answer["nested"] == {"leaf": "x", "child": {"count": 4}}
    assert answer["tags"] == ["a", "b"]
    assert (answer["kind"], answer["kinds"]) == ("KIND_BOOK", ["KIND_BOOK", "KIND_SHELF"])
    assert (answer["big"], answer["unsigned"]) == ("-9007199254740993", "18446744073709551615")
    assert (answer["flag"], answer["ratio"], answer["blob"]) == (True, 0.5, "aGk=")
    assert (answer["at"], answer["wait"]) == ("2024-01-02T03:04:05Z", "1.500s")
    assert answer["updateMask"] == "a,b.c"
    assert (answer["limit"], answer["label"]) == (7, "hello")


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("big=abc", "big"),
        ("kind=KIND_NOPE", "kind"),
        ("at=yesterday", "at"),
        ("wait=soon", "wait"),
        ("limit=x", "limit"),
        ("nested=x", "nested"),
        ("nope=1", "nope"),
        ("nested.nope=1", "nested.nope"),
        ("flag=maybe", "flag"),
    ],
)
async def test_bad_query_values_are_400_naming_the_field(
    gateway: str, query: str, named: str
) -> None:
    reply = await call(f"{gateway}/v1/query?{query}")
    assert reply.status == 400, reply
    assert named in _body(reply)["message"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"count": "many"}', "count"),
        (b'{"nope": 1}', "nope"),
        (b'{"big": 1.5}', "big"),
        (b"[1, 2]", "JSON object"),
        (b'{"name": ', "not valid JSON"),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(gateway: str, body: bytes, named: str) -> None:
    reply = await call(f"{gateway}/v1/star/s1", "POST", body, {"content-type": "application/json"})
    assert reply.status == 400, reply
    assert named in _body(reply)["message"]


# Responses


async def test_response_body_field(gateway: str) -> None:
    reply = await call(f"{gateway}/v1/items/i1/nested?nested.leaf=z&nested.count=2")
    assert reply.body == {"leaf": "z", "count": 2}
    assert (await call(f"{gateway}/v1/items/i1/nested")).body == {}


async def test_repeated_response_body_is_a_json_array(gateway: str) -> None:
    assert (await call(f"{gateway}/v1/items/i1/tags?tags=a&tags=b")).body == ["a", "b"]
    assert (await call(f"{gateway}/v1/items/i1/tags")).body == []


async def test_additional_bindings_reach_the_same_method(gateway: str) -> None:
    first = await _ok(f"{gateway}/v1/bindings/b1")
    second = await _ok(f"{gateway}/v1/bindings", "POST", {"id": "b2"})
    third = await _ok(f"{gateway}/v2/bindings/b3")
    assert (first["id"], second["id"], third["name"]) == ("b1", "b2", "bindings/b3")
    assert {a["seen"]["rpc"] for a in (first, second, third)} == {"bindings"}


async def test_server_streaming_is_one_json_line_per_message(gateway: str) -> None:
    def lines() -> list[str]:
        with _DIRECT.open(f"{gateway}/v1/stream/s1?count=3", timeout=10) as response:
            assert response.headers["content-type"] == "application/x-ndjson"
            return [line.decode() for line in response.read().splitlines()]

    results = [json.loads(line)["result"] for line in await asyncio.to_thread(lines)]
    assert [(r["id"], r.get("count", 0)) for r in results] == [("s1", 0), ("s1", 1), ("s1", 2)]


# Headers and deadlines


async def test_headers_travel_as_metadata(gateway: str) -> None:
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
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"  # the peer appended once


async def test_a_request_id_is_made_when_absent(gateway: str) -> None:
    reply = await call(f"{gateway}/v1/items/i1")
    made = reply.headers["x-request-id"]
    assert len(made) == 32
    assert _body(reply)["seen"]["x-request-id"] == made


async def test_grpc_timeout_sets_the_deadline(gateway: str) -> None:
    short = await _ok(f"{gateway}/v1/items/i1", **{"grpc-timeout": "2S"})
    assert 1.0 < short["deadlineSeconds"] <= 2.1
    default = await _ok(f"{gateway}/v1/items/i1")
    assert 25.0 < default["deadlineSeconds"] <= 30.1  # KEEL_EDGE_TIMEOUT's default
    bad = await call(f"{gateway}/v1/items/i1", headers={"grpc-timeout": "soon"})
    assert bad.status == 400
    assert "grpc-timeout" in _body(bad)["message"]


async def test_edge_timeout_settings(generated: Path) -> None:
    settings = Settings(edge_timeout=3.0, edge_max_timeout=5.0)
    async with _gateway(generated, settings) as url:
        default = await _ok(f"{url}/v1/items/i1")
        capped = await _ok(f"{url}/v1/items/i1", **{"grpc-timeout": "100S"})
    # gRPC rounds a deadline up on the wire, so the server may see a hair more than was set.
    assert 2.0 < default["deadlineSeconds"] <= 3.1
    assert 4.0 < capped["deadlineSeconds"] <= 5.1


# The OpenAPI document


def test_openapi_document_is_valid_and_complete(generated: Path) -> None:
    document = json.loads((generated / "openapi" / "conformance" / "v1" / "http.json").read_text())
    validate(document)
    operations = {
        op["operationId"]
        for item in document["paths"].values()
        for key, op in item.items()
        if not key.startswith("x-")
    }
    assert "HttpRuleService_Hidden" not in operations
    assert {"HttpRuleService_Bindings", "HttpRuleService_Bindings_1"} <= operations
    custom = document["paths"]["/v1/items"]["x-keel-custom-methods"]["SEARCH"]
    assert custom["operationId"] == "HttpRuleService_CustomMethod"
    wild = document["paths"]["/v1/wild/{segment}/end/{segment2}"]["get"]["parameters"]
    assert [p["name"] for p in wild if p["in"] == "path"] == ["segment", "segment2"]


def test_the_conformance_protos_cover_every_http_rule_form(generated: Path) -> None:
    source = (PROTOS / "conformance" / "v1" / "http.proto").read_text()
    for form in (
        "get:",
        "put:",
        "post:",
        "patch:",
        "delete:",
        "custom:",
        'body: "*"',
        "response_body:",
        "additional_bindings:",
        "=**}",
        "/*/",
        ":archive",
    ):
        assert form in source, form


def _stream_calls(code: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": "Stream", "grpc_code": code}
    labels["grpc_type"] = "server_stream"
    return REGISTRY.get_sample_value("grpc_client_handled_total", labels) or 0.0


async def test_a_stream_failing_after_its_first_message_is_counted_once(gateway: str) -> None:
    codes = [code.name for code in grpc.StatusCode]
    before = {code: _stream_calls(code) for code in codes}
    url = f"{gateway}/v1/stream/s1?count=3&name=fail-after-first"
    lines = await asyncio.to_thread(lambda: _DIRECT.open(url, timeout=10).read().splitlines())
    assert json.loads(lines[0])["result"]["name"] == "fail-after-first"
    assert json.loads(lines[-1])["error"]["code"] == grpc.StatusCode.ABORTED.value[0]
    counted = {code: _stream_calls(code) - before[code] for code in codes}
    assert {code: n for code, n in counted.items() if n} == {"ABORTED": 1}
