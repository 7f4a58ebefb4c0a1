"""REST served by the service itself: auth policy, errors, validation, observation, in-process.

Each test runs a real `keel.Server` with `rest_port=0` (a real uvicorn on a loopback port, on
the server's own event loop) and speaks HTTP to it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import grpc
import jwt
import keel
import pytest
from acme.catalog.v1 import catalog_pb2
from catalog.service import CatalogService
from catalog.store import MemoryStore, seed
from keel.runtime.config import Settings
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.test_gateway import Reply, call

SECRET = "test-secret-that-is-long-enough-for-hs256"
KEYS = Settings(jwt_secret=SECRET, jwt_audience="shop")
SERVICE = "acme.catalog.v1.CatalogService"


def _token(expires_in: int = 60, **claims: Any) -> str:
    body = {"sub": "u_1", "aud": "shop", "exp": int(time.time()) + expires_in, **claims}
    return "Bearer " + jwt.encode(body, SECRET, algorithm="HS256")


class Catalog(CatalogService):
    """The catalog, with ways to end a call for each way a handler can, by product id."""

    seen: ClassVar[list[tuple[str | None, bool, str]]] = []

    async def get_product(self, request: Any, context: keel.Context) -> Any:
        Catalog.seen.append((context.subject, context.verified, context.peer()))
        which = request.product_id
        if which == "abort":
            await context.abort(grpc.StatusCode.NOT_FOUND, "aborted here")
        if which == "set-code":
            context.set_code(grpc.StatusCode.ALREADY_EXISTS)
            context.set_details("set, then returned")
            return catalog_pb2.GetProductResponse()
        if which == "typed":
            raise keel.errors.FailedPrecondition(
                "not now",
                field_violations={"product_id": "is resting"},
                reason="RESTING",
                domain="acme.catalog",
            )
        if which == "busy":
            raise keel.errors.ResourceExhausted("busy", retry_after=2.0)
        if which == "bug":
            raise RuntimeError("a bug, with a secret in it")
        if which == "slow":
            await asyncio.sleep(30)
        return await super().get_product(request, context)


@asynccontextmanager
async def _served(keys: Settings | None = None, **options: Any) -> AsyncIterator[str]:
    implementation = Catalog(seed(MemoryStore()))
    server = keel.Server([implementation], port=0, rest_port=0, keys=keys or Settings(), **options)
    async with server:
        yield f"http://127.0.0.1:{server.rest_port}"


@pytest.fixture
async def rest() -> AsyncIterator[str]:
    async with _served() as url:
        yield url


@pytest.fixture
async def guarded() -> AsyncIterator[str]:
    async with _served(KEYS) as url:
        yield url


def _body(reply: Reply) -> dict[str, Any]:
    assert isinstance(reply.body, dict), reply
    return reply.body


def _detail(reply: Reply, kind: str) -> dict[str, Any]:
    details: list[dict[str, Any]] = _body(reply)["details"]
    found = [d for d in details if d["@type"].endswith(f"/google.rpc.{kind}")]
    assert len(found) == 1, reply
    return found[0]


_PRODUCT = {"title": "Cup", "priceCents": "450", "currency": "EUR"}  # body: "product"


# The proto's auth policy, in the service's own process


async def test_a_scoped_method_without_a_token_is_401(guarded: str) -> None:
    reply = await call(f"{guarded}/v1/products", "POST", _PRODUCT)
    assert reply.status == 401
    assert _body(reply)["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert 'error="invalid_request"' in reply.headers["www-authenticate"]


async def test_a_token_without_the_scope_is_403(guarded: str) -> None:
    headers = {"authorization": _token(scope="catalog.read")}
    reply = await call(f"{guarded}/v1/products", "POST", _PRODUCT, headers)
    assert reply.status == 403
    assert _body(reply)["code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "catalog.write" in reply.headers["www-authenticate"]


async def test_bad_tokens_are_401_even_on_public_methods(guarded: str) -> None:
    for token in (_token(expires_in=-60), "Bearer not-a-jwt", _token(aud="elsewhere")):
        reply = await call(f"{guarded}/v1/products/p_mug", headers={"authorization": token})
        assert reply.status == 401, (token, reply)
        assert 'error="invalid_token"' in reply.headers["www-authenticate"]


async def test_the_method_gets_the_verified_user(guarded: str) -> None:
    # With the scope, the request reaches the method (which answers: no such product).
    headers = {"authorization": _token(scope="catalog.write")}
    admitted = await call(f"{guarded}/v1/products/p_none:archive", "POST", {}, headers)
    assert admitted.status == 404, admitted
    Catalog.seen.clear()
    headers = {"authorization": _token(sub="alice")}
    assert (await call(f"{guarded}/v1/products/p_mug", headers=headers)).status == 200
    assert (await call(f"{guarded}/v1/products/p_mug")).status == 200  # public: no token needed
    (alice, verified, peer), (nobody, unverified, _) = Catalog.seen
    assert (alice, verified, nobody, unverified) == ("alice", True, None, False)
    assert re.fullmatch(r"ipv4:127\.0\.0\.1:\d+", peer)


async def test_identity_headers_from_the_client_are_not_believed(rest: str) -> None:
    Catalog.seen.clear()
    headers = {"grpc-metadata-x-keel-subject": "mallory", "x-keel-subject": "mallory"}
    assert (await call(f"{rest}/v1/products/p_mug", headers=headers)).status == 200
    assert Catalog.seen[0][0] is None


# How a handler ends a call, as HTTP


async def test_a_typed_error_keeps_its_status_and_details(rest: str) -> None:
    reply = await call(f"{rest}/v1/products/typed")
    assert reply.status == 400  # FAILED_PRECONDITION
    body = _body(reply)
    assert (body["code"], body["message"]) == (9, "not now")
    assert _detail(reply, "ErrorInfo")["reason"] == "RESTING"
    violations = _detail(reply, "BadRequest")["fieldViolations"]
    assert violations == [{"field": "productId", "description": "is resting"}]  # (JSON name)


async def test_abort_and_set_code_are_the_gateway_statuses(rest: str) -> None:
    aborted = await call(f"{rest}/v1/products/abort")
    assert (aborted.status, _body(aborted)["message"]) == (404, "aborted here")
    returned = await call(f"{rest}/v1/products/set-code")
    assert returned.status == 409  # ALREADY_EXISTS, not the message it returned
    assert _body(returned)["message"] == "set, then returned"
    busy = await call(f"{rest}/v1/products/busy")
    assert busy.status == 429
    assert _detail(busy, "RetryInfo")["retryDelay"] == "2s"


async def test_a_bug_is_a_500_naming_the_correlation_id_only(rest: str) -> None:
    reply = await call(f"{rest}/v1/products/bug", headers={"x-request-id": "req-bug-1"})
    assert reply.status == 500
    assert _body(reply)["message"] == "internal error (correlation id req-bug-1)"
    assert "secret" not in json.dumps(reply.body)


async def test_the_deadline_is_enforced(rest: str) -> None:
    reply = await call(f"{rest}/v1/products/slow", headers={"grpc-timeout": "200m"})
    assert reply.status == 504
    assert _body(reply)["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


# Validation, by the same rules as gRPC calls


async def test_validation_names_the_field(rest: str) -> None:
    bad = {"title": "Cup", "priceCents": "-1", "currency": "euro"}
    reply = await call(f"{rest}/v1/products", "POST", bad)
    assert reply.status == 400
    fields = {v["field"] for v in _detail(reply, "BadRequest")["fieldViolations"]}
    assert fields == {"product.priceCents", "product.currency"}  # JSON names
    message = _body(reply)["message"]
    assert message.startswith("invalid acme.catalog.v1.CreateProductRequest: ")
    assert "product.priceCents: " in message
    assert "price_cents" not in message


async def test_bad_json_is_400_naming_the_field_before_the_method(rest: str) -> None:
    reply = await call(f"{rest}/v1/products", "POST", {"priceCents": {}})
    assert reply.status == 400
    message = _body(reply)["message"]
    assert "product.price_cents (product.priceCents in JSON): expected an integer" in message


# Observation: one line per request, the server's metrics, the caller's trace


def _handled(code: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": "GetProduct", "grpc_code": code}
    labels["grpc_type"] = "unary"
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


def _requests(status: str) -> float:
    labels = {"http_request_method": "GET", "http_route": "/v1/products/{product_id}"}
    labels["http_response_status_code"] = status
    return REGISTRY.get_sample_value("http_server_request_duration_seconds_count", labels) or 0.0


async def test_each_request_is_one_line_and_counted_as_a_call(rest: str) -> None:
    before = {code: _handled(code) for code in ("OK", "NOT_FOUND")}
    requests_before = {status: _requests(status) for status in ("200", "404")}
    with capture_logs() as lines:
        await call(f"{rest}/v1/products/p_mug", headers={"x-request-id": "req-42"})
        await call(f"{rest}/v1/products/missing")
    http = [line for line in lines if line["event"] == "http"]
    assert [line["status"] for line in http] == [200, 404]
    assert http[0]["correlation_id"] == "req-42"
    assert http[0]["route"] == "/v1/products/{product_id}"
    assert not [line for line in lines if line["event"] == "rpc"]  # one line per request
    assert _handled("OK") - before["OK"] == 1
    assert _handled("NOT_FOUND") - before["NOT_FOUND"] == 1
    # and as a request at the edge, in the same registry
    assert _requests("200") - requests_before["200"] == 1
    assert _requests("404") - requests_before["404"] == 1


async def test_the_call_continues_the_callers_trace(spans: Any) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    parent = f"00-{trace_id}-b7ad6b7169203331-01"
    async with _served() as url:
        await call(f"{url}/v1/products/p_mug", headers={"traceparent": parent})
    (span,) = [s for s in spans.get_finished_spans() if s.name == f"{SERVICE}/GetProduct"]
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"


async def test_readiness_and_documents(rest: str) -> None:
    assert (await call(f"{rest}/readyz")).body == {"status": "ready"}
    document = _body(await call(f"{rest}/openapi.json"))
    assert "/v1/products/{product_id}" in document["paths"]
    assert not [p for p in document["paths"] if p.startswith("/v1/orders")]  # its own only


class Stamp:
    """ASGI middleware: adds `x-<name>` to every HTTP answer, saying which stamps it saw."""

    def __init__(self, app: Any, name: str = "outer") -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def stamped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen = b",".join(k for k, _ in message["headers"] if k.startswith(b"x-")) or b"-"
                message["headers"] = [*message["headers"], (f"x-{self.name}".encode(), seen)]
            await send(message)

        await self.app(scope, receive, stamped)


async def test_rest_middleware_wraps_the_routes() -> None:
    async with _served(rest_middleware=[Stamp, lambda app: Stamp(app, "inner")]) as url:
        replies = [await call(f"{url}/v1/products/p_mug"), await call(f"{url}/v1/nothing")]
    for reply in replies:
        assert reply.headers["x-inner"] == "x-request-id"  # the innermost sees the app's answer
        assert reply.headers["x-outer"] == "x-request-id,x-inner"  # the first is outermost


class Screen(grpc.aio.ServerInterceptor):
    """Notes every call it sees; refuses those whose metadata says x-screen: refuse."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        metadata = dict(details.invocation_metadata)
        self.seen.append((details.method, str(metadata.get("x-request-id", ""))))
        if metadata.get("x-screen") == "refuse":

            async def refuse(request: Any, context: Any) -> Any:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "refused by the screen")

            return grpc.unary_unary_rpc_method_handler(refuse)
        return await continuation(details)


async def test_the_servers_interceptors_see_and_can_refuse_rest_calls() -> None:
    """Interceptors run for every call the server answers, REST requests included: one that
    refuses refuses both ways."""
    screen = Screen()
    async with _served(interceptors=[screen]) as url:
        served = await call(f"{url}/v1/products/p_mug", headers={"x-request-id": "r-1"})
        refused = await call(
            f"{url}/v1/products/p_mug", headers={"grpc-metadata-x-screen": "refuse"}
        )
    assert served.status == 200
    assert _body(served)["title"] == "Mug"
    assert refused.status == 403
    assert _body(refused)["message"] == "refused by the screen"
    assert screen.seen[0] == ("/acme.catalog.v1.CatalogService/GetProduct", "r-1")
    assert len(screen.seen) == 2
