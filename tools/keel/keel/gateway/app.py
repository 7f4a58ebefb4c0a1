"""The gateway as a plain ASGI app: route, transcode, call gRPC, answer JSON.

Errors are always JSON (`{"code", "message", "details"}`): unknown route 404, known path with
another method 405 with `Allow`, bad input 400 naming the field, oversized body 413, gRPC
statuses by google/rpc/code.proto's HTTP mapping. Never a stack trace in a response.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
import grpc.aio
import prometheus_client
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from keel.gateway import status
from keel.gateway.auth import Authenticator, DeniedError, policy
from keel.gateway.docs import DOCS_PAGE
from keel.gateway.edge import Cors, RateLimiter
from keel.gateway.routes import Match, RouteTable
from keel.gateway.transcode import BadInputError, raw_response, request_message, response_body
from keel.runtime import discovery, propagation, workers
from keel.runtime.channels import open_channel
from keel.runtime.config import ConfigError, Settings
from keel.runtime.logs import get_logger
from keel.runtime.observe import ClientObserver, client_metrics
from keel.runtime.spec import ServiceSpec

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_log = get_logger("keel.gateway")
_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_FORWARDED = ("authorization", "traceparent", "tracestate")
_METADATA_KEY = re.compile(r"[0-9a-z_.\-]+")
_METADATA_VALUE = re.compile(r"[\x20-\x7e]*")
_EDGE = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")
JSON = [(b"content-type", b"application/json")]


class _TooLargeError(Exception):
    pass


def grpc_timeout(value: str) -> float | None:
    """Seconds from a `Grpc-Timeout` header (`5S`, `250m`), None if malformed."""
    match = _TIMEOUT.match(value.strip())
    return None if match is None else int(match[1]) * _UNITS[match[2]]


class Gateway:
    """REST/JSON in front of the gRPC services in `routes`.

    `targets` maps full service names to addresses; others use `default_target`, else
    discovery (KEEL_TARGET_*, services/registry.toml).
    """

    def __init__(
        self,
        routes: RouteTable,
        *,
        targets: Mapping[str, str] | None = None,
        default_target: str | None = None,
        settings: Settings | None = None,
        max_body_bytes: int = 1 << 20,
    ) -> None:
        self.routes = routes
        self.targets = dict(targets or {})
        self.default_target = default_target
        self.settings = settings or Settings()
        self.max_body_bytes = max_body_bytes
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._callables: dict[str, tuple[Any, ClientObserver]] = {}
        self._openapi = json.dumps(routes.openapi).encode()
        self._services = {service.name: service for service in routes.services}
        self._verbs = {route.verb for route in routes.routes}  # custom methods included
        self.cors = Cors(self.settings.cors_origins.split(","))
        self.limiter = (
            RateLimiter(self.settings.rate_limit, self.settings.rate_burst)
            if self.settings.rate_limit
            else None
        )
        self.auth = Authenticator(self.settings)
        if not self.auth.configured:
            _log.warning(
                "NO AUTHENTICATION: no JWT keys configured (KEEL_JWT_SECRET, KEEL_JWKS_FILE or "
                "KEEL_JWKS_URL); every method is reachable without a token. Development only."
            )

    def _target(self, service: ServiceSpec) -> str:
        if service.name in self.targets:
            return self.targets[service.name]
        if self.default_target:
            return self.default_target
        return discovery.resolve(service.name, self.settings)

    def _channel(self, service: ServiceSpec) -> grpc.aio.Channel:
        channel = self._channels.get(service.name)
        if channel is None:
            channel = open_channel(self._target(service), service, self.settings)
            self._channels[service.name] = channel
        return channel

    def _callable(self, match: Match) -> tuple[Any, ClientObserver]:
        """The upstream method, and the grpc_client_* metrics of its calls."""
        method = match.route.method
        found = self._callables.get(method.path)
        if found is None:
            service = self._services[method.service]
            factory = getattr(self._channel(service), method.kind.value)
            multicallable = factory(
                method.path,
                request_serializer=method.request_type.SerializeToString,
                response_deserializer=method.response_type.FromString,
            )
            found = (multicallable, ClientObserver(method, client_metrics()))
            self._callables[method.path] = found
        return found

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._callables.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            exchange = _Exchange(send)
            try:
                await self._http(scope, receive, exchange)
            except Exception:  # an edge answers JSON, never a stack trace
                _log.exception("gateway request failed", path=scope.get("path"))
                if not exchange.started:
                    payload = status.body(grpc.StatusCode.INTERNAL, "internal error")
                    await exchange.reply(500, payload)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _body(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLargeError
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _http(self, scope: Scope, receive: Receive, exchange: _Exchange) -> None:
        headers = {
            key: value
            for key, value in (
                (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]
            )
            # Identity metadata comes from verified tokens only, never from the client.
            if not key.startswith("grpc-metadata-x-keel-")
        }
        request_id = headers.get("x-request-id") or propagation.new_id()
        exchange.extra.append((b"x-request-id", request_id.encode()))
        allow_origin = self.cors.allowed(headers.get("origin"))
        if allow_origin:
            exchange.extra += [
                (b"access-control-allow-origin", allow_origin.encode()),
                (b"access-control-expose-headers", b"x-request-id"),
                (b"vary", b"origin"),
            ]
        reply = exchange.reply

        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        if path in _EDGE and scope["method"] in ("GET", "HEAD"):
            await self._edge(path, reply)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(path, headers, exchange)
            return
        found = self.routes.find(scope["method"], path)
        if found is None:
            await reply(404, status.body(grpc.StatusCode.NOT_FOUND, f"no route for {path}"))
            return
        if isinstance(found, set):
            allow = ", ".join(sorted(found))
            message = f"{scope['method']} is not allowed on {path}; allowed: {allow}"
            await reply(
                405,
                status.body(grpc.StatusCode.UNIMPLEMENTED, message),
                [(b"allow", allow.encode())],
            )
            return
        admitted, claims = await self._admit(found, headers, scope, reply)
        if not admitted:
            return
        if claims is not None:
            headers = {
                **headers,
                "grpc-metadata-x-keel-subject": str(claims.get("sub", "")),
                "grpc-metadata-x-keel-claims": json.dumps(claims, separators=(",", ":")),
            }
        if found.route.method.kind.client_streaming:
            message = f"{found.route.method.path} takes a stream of requests: gRPC only"
            await reply(501, status.body(grpc.StatusCode.UNIMPLEMENTED, message))
            return
        try:
            body = await self._body(receive)
            query = scope.get("query_string", b"").decode("latin-1")
            content_type = headers.get("content-type", "")
            request = request_message(found, query, body, content_type)
        except _TooLargeError:
            limit = f"the body is larger than {self.max_body_bytes} bytes"
            await reply(413, status.body(grpc.StatusCode.INVALID_ARGUMENT, limit))
            return
        except BadInputError as error:
            await reply(400, _bad_input(error))
            return
        call_headers = {**headers, "x-request-id": request_id}
        if found.route.method.kind.server_streaming:
            sse = "text/event-stream" in headers.get("accept", "")
            stream = _Stream(exchange, receive, sse)
            await self._stream(found, request, call_headers, scope, stream)
        else:
            await self._call(found, request, call_headers, scope, reply)

    async def _admit(
        self,
        found: Match,
        headers: Mapping[str, str],
        scope: Scope,
        reply: Callable[..., Awaitable[None]],
    ) -> tuple[bool, dict[str, Any] | None]:
        """Authentication and rate limiting; (False, None) once it has answered the request."""
        method = found.route.method
        try:
            claims = self.auth.check(
                policy(method, self._services[method.service]), headers.get("authorization")
            )
        except DeniedError as denied:
            code = grpc.StatusCode.UNAUTHENTICATED
            if denied.status == 403:
                code = grpc.StatusCode.PERMISSION_DENIED
            challenge = [(b"www-authenticate", denied.challenge().encode())]
            await reply(denied.status, status.body(code, denied.description), challenge)
            return False, None
        if self.limiter is not None:
            identity = str(claims.get("sub")) if claims else str((scope.get("client") or ("",))[0])
            if not self.limiter.allow(identity, f"{found.route.verb} {found.route.rule.path}"):
                wait = str(self.limiter.retry_after).encode()
                message = "too many requests; slow down"
                body = status.body(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
                await reply(429, body, [(b"retry-after", wait)])
                return False, None
        return True, claims

    async def _preflight(self, path: str, headers: Mapping[str, str], exchange: _Exchange) -> None:
        origin = self.cors.allowed(headers.get("origin"))
        verbs = {v for v in self._verbs if isinstance(self.routes.find(v, path), Match)}
        if origin is None or not verbs:
            payload = status.body(grpc.StatusCode.PERMISSION_DENIED, "CORS preflight refused")
            await exchange.send_all(403, [*JSON], payload)
            return
        requested = headers.get("access-control-request-headers", "")
        allowed = self.cors.preflight(origin, verbs, requested)
        await exchange.send_all(204, allowed, b"")

    async def _edge(self, path: str, reply: Callable[..., Awaitable[None]]) -> None:
        if path == "/healthz":
            await reply(200, b'{"status":"ok"}')
        elif path == "/openapi.json":
            await reply(200, self._openapi)
        elif path == "/docs":
            await reply(200, DOCS_PAGE, [(b"content-type", b"text/html; charset=utf-8")])
        elif path == "/readyz":
            down = await self._unready()
            if down:
                payload = json.dumps({"status": "unavailable", "not_serving": down}).encode()
                await reply(503, payload)
            else:
                await reply(200, b'{"status":"ready"}')
        else:
            metrics = workers.merged_metrics()
            await reply(
                200, metrics, [(b"content-type", prometheus_client.CONTENT_TYPE_LATEST.encode())]
            )

    async def _unready(self) -> list[str]:
        """The upstream services whose health check does not answer SERVING."""
        down = []
        for service in self.routes.services:
            try:
                channel = self._channel(service)
                check = channel.unary_unary(
                    "/grpc.health.v1.Health/Check",
                    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                    response_deserializer=health_pb2.HealthCheckResponse.FromString,
                )
                answer = await check(health_pb2.HealthCheckRequest(service=service.name), timeout=2)
                if answer.status != health_pb2.HealthCheckResponse.SERVING:
                    down.append(service.name)
            except (grpc.aio.AioRpcError, ConfigError):
                down.append(service.name)
        return down

    def _outbound(
        self, match: Match, headers: Mapping[str, str], scope: Scope
    ) -> tuple[list[tuple[str, str]], float]:
        """The call's metadata (forwarded headers) and deadline."""
        method = match.route.method
        metadata: list[tuple[str, str]] = [("x-request-id", headers["x-request-id"])]
        metadata += [(k, headers[k]) for k in _FORWARDED if k in headers]
        metadata += [
            (k.removeprefix("grpc-metadata-"), v)
            for k, v in headers.items()
            if k.startswith("grpc-metadata-")
        ]
        client = scope.get("client")
        forwarded = headers.get("x-forwarded-for")
        if client:
            forwarded = f"{forwarded}, {client[0]}" if forwarded else client[0]
        if forwarded:
            metadata.append(("x-forwarded-for", forwarded))
        for key, value in metadata:
            if not _METADATA_KEY.fullmatch(key):
                raise BadInputError(f"header {key!r} cannot travel as gRPC metadata")
            if not _METADATA_VALUE.fullmatch(value):
                raise BadInputError(f"header {key!r} has characters gRPC metadata cannot carry")
        asked = headers.get("grpc-timeout")
        timeout = grpc_timeout(asked) if asked is not None else None
        if asked is not None and timeout is None:
            raise BadInputError(
                f"header grpc-timeout {asked!r} is not a gRPC timeout (e.g. 5S, 250m)"
            )
        service = self._services[method.service]
        timeout = timeout or method.timeout or service.default_timeout or self.settings.edge_timeout
        cap = self.settings.edge_max_timeout
        return metadata, min(timeout, cap) if cap else timeout

    async def _call(
        self,
        match: Match,
        request: Any,
        headers: Mapping[str, str],
        scope: Scope,
        reply: Callable[..., Awaitable[None]],
    ) -> None:
        try:
            metadata, timeout = self._outbound(match, headers, scope)
        except BadInputError as error:
            await reply(400, _bad_input(error))
            return
        upstream, observer = self._callable(match)
        began = observer.started()
        try:
            response = await upstream(request, timeout=timeout, metadata=metadata)
        except Exception as error:
            observer.finished(began, _code(error))
            await reply(*_failure(match, error))
            return
        observer.finished(began, grpc.StatusCode.OK)
        raw = raw_response(match, response)
        if raw is not None:
            await reply(200, raw[1], [(b"content-type", raw[0].encode())])
            return
        await reply(200, response_body(match, response))

    async def _stream(
        self,
        match: Match,
        request: Any,
        headers: Mapping[str, str],
        scope: Scope,
        stream: _Stream,
    ) -> None:
        """Server streaming: NDJSON `{"result": ...}` lines, or SSE `data:` events.

        Until the first message the HTTP status still says how the call went; after it, an
        error arrives as a last `{"error": ...}` line (SSE: an `error` event).
        """
        try:
            metadata, timeout = self._outbound(match, headers, scope)
        except BadInputError as error:
            await stream.reply(400, _bad_input(error))
            return
        upstream, observer = self._callable(match)
        began = observer.started()
        call = upstream(request, timeout=timeout, metadata=metadata)
        watcher = asyncio.ensure_future(stream.disconnected())
        watcher.add_done_callback(lambda _: call.cancel())
        try:
            async for response in call:
                observer.received()
                await stream.item(b'{"result":' + response_body(match, response) + b"}")
        except Exception as error:
            observer.finished(began, _code(error))
            if watcher.done():
                return
            code, payload = _failure(match, error)
            if stream.started:
                await stream.item(b'{"error":' + payload + b"}", event=b"error")
            else:
                await stream.reply(code, payload)
                return
        finally:
            watcher.cancel()
        observer.finished(began, grpc.StatusCode.OK)
        await stream.end()


class _Exchange:
    """One HTTP response being written: its extra headers, and whether it has started."""

    __slots__ = ("extra", "send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.extra: list[tuple[bytes, bytes]] = []
        self.started = False

    async def start(self, code: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        await self.send({"type": "http.response.start", "status": code, "headers": headers})

    async def send_all(self, code: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        await self.start(code, headers)
        await self.send({"type": "http.response.body", "body": body})

    async def reply(
        self, code: int, payload: bytes, more: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """A whole response: JSON unless `more` names another content type."""
        if more is None:
            headers = [*JSON, *self.extra]
        elif any(key == b"content-type" for key, _ in more):
            headers = [*more, *self.extra]
        else:
            headers = [*JSON, *more, *self.extra]
        await self.send_all(code, headers, payload)


class _Stream:
    """Writes a streamed response: headers before the first item, then one item per message."""

    def __init__(self, exchange: _Exchange, receive: Receive, sse: bool) -> None:
        self.exchange = exchange
        self.reply = exchange.reply
        self._receive = receive
        self.sse = sse

    @property
    def started(self) -> bool:
        return self.exchange.started

    async def disconnected(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass

    async def _start(self) -> None:
        kind = b"text/event-stream" if self.sse else b"application/x-ndjson"
        headers = [(b"content-type", kind), (b"cache-control", b"no-cache"), *self.exchange.extra]
        await self.exchange.start(200, headers)

    async def item(self, payload: bytes, event: bytes = b"") -> None:
        if not self.started:
            await self._start()
        if self.sse:
            head = b"event: " + event + b"\n" if event else b""
            chunk = head + b"data: " + payload + b"\n\n"
        else:
            chunk = payload + b"\n"
        await self.exchange.send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end(self) -> None:
        if not self.started:
            await self._start()
        await self.exchange.send({"type": "http.response.body", "body": b""})


def _bad_input(error: BadInputError) -> bytes:
    violations = [(v.field, v.description) for v in error.violations]
    return status.bad_request(str(error), violations)


def _code(error: Exception) -> grpc.StatusCode:
    return error.code() if isinstance(error, grpc.aio.AioRpcError) else grpc.StatusCode.UNKNOWN


def _failure(match: Match, error: Exception) -> tuple[int, bytes]:
    """HTTP status and JSON body for a failed upstream call."""
    if isinstance(error, grpc.aio.AioRpcError):
        code = error.code()
        found = rpc_status.from_call(error)  # type: ignore[arg-type]
        payload = (
            status.from_status(found)
            if found is not None
            else status.body(code, error.details() or code.name)
        )
        return status.HTTP_STATUS.get(code, 500), payload
    _log.error("gateway call failed", method=match.route.method.path, exc_info=error)
    return 500, status.body(grpc.StatusCode.INTERNAL, "internal error")
