"""The gateway as a plain ASGI app: route, admit, transcode, call gRPC, answer JSON; or, for
a service that serves its own REST routes, route and pass the request through to it.

A request reads top to bottom through `Gateway._handle`: the request id and CORS headers, the
gateway's own endpoints, the path check and route, admission (auth, rate limits), transcoding,
the outbound metadata and deadline, then the upstream call (keel.gateway.dispatch). Each step
lives in a module of its own; ASGI middleware given to the gateway wraps all of it.

Errors are always JSON (`google.rpc.Status`): unknown route 404, known path with another method
405 with `Allow`, bad input 400 naming the field, oversized body 413 (on a route that takes a
body; others do not read it), gRPC statuses by google/rpc/code.proto's HTTP mapping. Never a
stack trace in a response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc

from keel.gateway import dispatch, outbound, status
from keel.gateway.access import AccessRecord
from keel.gateway.admission import Admission, Refusal
from keel.gateway.edge import Cors
from keel.gateway.endpoints import PATHS, Endpoints
from keel.gateway.exchange import (
    JSON,
    ASGIApp,
    BodyTooLargeError,
    Exchange,
    Receive,
    Scope,
    Send,
    read_body,
)
from keel.gateway.outbound import grpc_timeout
from keel.gateway.passthrough import Passthrough, rest_addresses
from keel.gateway.paths import request_path
from keel.gateway.protojson import InputError
from keel.gateway.routes import Match, RouteTable
from keel.gateway.transcode import request_message
from keel.gateway.upstream import Upstreams
from keel.runtime import propagation
from keel.runtime.config import ConfigError, Settings
from keel.runtime.logs import get_logger
from keel.runtime.metrics import http_metrics as default_http_metrics
from keel.runtime.spec import MethodSpec, RpcKind

__all__ = ["Gateway", "Middleware", "grpc_timeout"]

_log = get_logger("keel.gateway")
_CLIENT_STREAMING = tuple(kind for kind in RpcKind if kind.client_streaming)
"""(A tuple: members are found by identity; a set would hash an Enum in Python per request.)"""
_IDENTITY_PREFIX = outbound.PREFIX + "x-keel-"

Middleware = Callable[[ASGIApp], ASGIApp] | Any
"""ASGI middleware: a callable taking the app and returning an app (a class such as
Starlette's middleware classes), or a `starlette.middleware.Middleware(cls, **options)`."""


def _wrap(app: ASGIApp, middleware: Sequence[Middleware]) -> ASGIApp:
    """`app` inside `middleware`, the first one outermost (as Starlette stacks them)."""
    for layer in reversed(middleware):
        if hasattr(layer, "cls") and hasattr(layer, "kwargs"):  # starlette's Middleware
            app = layer.cls(app, *getattr(layer, "args", ()), **layer.kwargs)
        else:
            app = layer(app)
    return app


def wants_events(scope: Scope) -> bool:
    """Whether a request asks for Server-Sent Events (`Accept: text/event-stream`)."""
    return any(k == b"accept" and b"text/event-stream" in v for k, v in scope["headers"])


def _bad_input(error: InputError) -> bytes:
    return status.bad_request(str(error), [(v.field, v.description) for v in error.violations])


class Gateway:
    """REST/JSON in front of the gRPC services in `routes`.

    `targets` maps full service names to addresses; others use `default_target`, else
    discovery (KEEL_TARGET_*, services/registry.toml). `middleware` wraps the gateway in ASGI
    middleware; `client_interceptors` are grpc.aio client interceptors for the upstream calls.

    `upstream` (default KEEL_GATEWAY_UPSTREAM) chooses how a request reaches its service:
    `auto` passes it through to the service's own REST port when its address is known
    (`rest_targets`: full service name → host:port, else KEEL_REST_TARGET_*, the registry's
    `[rest_targets]`), else transcodes it to gRPC; `grpc` always transcodes; `rest` always
    passes through (every service needs a REST address). See keel.gateway.passthrough.

    Every request is counted in `http_server_request_duration_seconds` (method, route, status;
    keel.runtime.httpmetrics) unless `metrics=False`.
    """

    edge_span = True
    """Whether each request starts a SERVER span of its own (else the request's trace context
    goes on with the call as it came, and the call's span is the request's)."""
    warn_unauthenticated = True
    """Whether a gateway without JWT keys warns at start-up."""

    def __init__(
        self,
        routes: RouteTable,
        *,
        targets: Mapping[str, str] | None = None,
        default_target: str | None = None,
        settings: Settings | None = None,
        max_body_bytes: int = 1 << 20,
        middleware: Iterable[Middleware] = (),
        client_interceptors: Sequence[Any] = (),
        rest_targets: Mapping[str, str] | None = None,
        upstream: str | None = None,
        metrics: bool = True,
    ) -> None:
        self.routes = routes
        self.settings = settings or Settings()
        self.max_body_bytes = max_body_bytes
        self.metrics = default_http_metrics() if metrics else None
        """Where each request is counted (keel.runtime.httpmetrics), None when it is not."""
        self._services = {service.name: service for service in routes.services}
        self._verbs = {route.verb for route in routes.routes}  # custom methods included
        self.upstreams = Upstreams(
            routes.services, self.settings, targets, default_target, client_interceptors
        )
        self.passthrough = Passthrough(
            rest_addresses(routes, self.settings, rest_targets, upstream)
        )
        self._passed = self.passthrough.pools
        """The pool of each service whose requests pass through to its REST port."""
        self._upstreams: dict[str, tuple[str, str]] = {}
        """Where each service's requests go, for the access line (`_upstream`)."""
        self.endpoints = Endpoints(
            routes.openapi,
            self._not_serving,
            routes.asyncapi,
            services=[service.name for service in routes.services],
            diagram=routes.diagram,
        )
        self._timeouts = {
            id(r.method): outbound.deadline(
                {}, r.method, self._services[r.method.service], self.settings
            )
            for r in routes.routes
        }
        """Each routed method's deadline when the request sets none (by the identity of its
        MethodSpec)."""
        self.cors = Cors(self.settings.cors_origins.split(","))
        self.admission = Admission(self._services, self.settings)
        if not self.admission.auth.configured and self.warn_unauthenticated:
            _log.warning(
                "NO AUTHENTICATION: no JWT keys configured (KEEL_JWT_SECRET, KEEL_JWKS_FILE or "
                "KEEL_JWKS_URL); every method is reachable without a token. Development only."
            )
        layers = list(middleware)
        self._wrapped = _wrap(self._asgi, layers) if layers else None

    async def close(self) -> None:
        """Close the upstream channels and connections."""
        self.passthrough.close()
        await self.upstreams.close()

    async def _not_serving(self) -> list[str]:
        """The services not ready: REST `/readyz` of those passed through, gRPC health of the
        others (with some passed through: of the others with routes)."""
        if not self._passed:
            return await self.upstreams.not_serving()
        down = await self.passthrough.not_serving()
        routed = {route.method.service for route in self.routes.routes}
        others = [name for name in routed if name not in self._passed]
        if others:
            down += await self.upstreams.not_serving(others)
        return down

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._wrapped is not None:
            await self._wrapped(scope, receive, send)
        elif scope["type"] == "http":  # (the common case without a call more)
            await self._http(scope, receive, send)
        else:
            await self._asgi(scope, receive, send)

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The gateway inside its middleware."""
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {}
        prefixed = False  # whether any header is a `Grpc-Metadata-` one
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            if key.startswith(outbound.PREFIX):
                # Identity metadata comes from verified tokens only, never from the client.
                if key.startswith(_IDENTITY_PREFIX):
                    continue
                prefixed = True
            headers[key] = value.decode("latin-1")
        request_id = headers.get("x-request-id") or propagation.new_id()
        headers["x-request-id"] = request_id
        exchange = Exchange(send, [(b"x-request-id", request_id.encode())])
        record = AccessRecord(
            scope["method"],
            request_id,
            headers,
            log=self.settings.log_calls,
            span=self.edge_span,
            metrics=self.metrics,
        )
        try:
            await self._handle(scope, receive, headers, exchange, record, prefixed=prefixed)
        except Exception:  # an edge answers JSON, never a stack trace
            _log.exception("gateway request failed", path=scope.get("path"))
            if not exchange.started:
                payload = status.body(grpc.StatusCode.INTERNAL, "internal error")
                await exchange.reply(500, payload)
        finally:
            record.finish(exchange.status or dispatch.CLIENT_CLOSED)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        headers: dict[str, str],
        exchange: Exchange,
        record: AccessRecord,
        *,
        prefixed: bool,
    ) -> None:
        origin = self.cors.allowed(headers.get("origin")) if self.cors.origins else None
        if origin:
            exchange.extra += [
                (b"access-control-allow-origin", origin.encode()),
                (b"access-control-expose-headers", b"x-request-id"),
                (b"vary", b"origin"),
            ]
        verb = scope["method"]
        try:
            path = request_path(scope.get("raw_path") or scope["path"].encode())
        except InputError as error:
            await exchange.reply(400, _bad_input(error))
            return
        if path in PATHS and verb in ("GET", "HEAD"):
            self._route(record, path)  # its own route (a few fixed paths)
            await self.endpoints.answer(path, exchange, headers)
            return
        if (
            verb == "OPTIONS"
            and "access-control-request-method" in headers
            and await self._preflights(scope, path, headers, exchange, record)
        ):
            return
        found = self.routes.find(verb, path)
        if not isinstance(found, Match):
            await _unrouted(verb, path, found, self.routes, exchange)
            return
        self._route(record, found.route.rule.path)
        record.upstream = self._upstream(found.route.method.service)
        if self._passed and found.route.method.service in self._passed:
            await self._pass(found, scope, receive, headers, exchange)
            return
        admitted = self.admission.check(found, headers.get("authorization"), scope.get("client"))
        if isinstance(admitted, Refusal):
            await exchange.reply(admitted.status, admitted.body, admitted.headers)
            return
        record.subject = admitted.subject
        method = found.route.method
        if method.kind in _CLIENT_STREAMING:
            message = f"{method.path} takes a stream of requests: gRPC only"
            await exchange.reply(501, status.body(grpc.StatusCode.UNIMPLEMENTED, message))
            return
        try:
            # A route without a body takes nothing from it: it is not read (nor its size checked).
            body = await read_body(receive, self.max_body_bytes) if found.route.rule.body else b""
            raw_query = scope["query_string"]
            query = raw_query.decode("latin-1") if raw_query else ""
            request = request_message(found, query, body, headers.get("content-type", ""))
            metadata = outbound.metadata(
                headers, scope.get("client"), not self.edge_span, prefixed=prefixed
            )
            if admitted.claims is not None:
                metadata += admitted.metadata()
            timeout = self._timeout(headers, method)
        except (BodyTooLargeError, InputError) as error:
            await exchange.reply(*self._refusal(error))
            return
        await self._dispatch(
            found, request, timeout, metadata, scope=scope, receive=receive, exchange=exchange
        )

    async def _preflights(
        self,
        scope: Scope,
        path: str,
        headers: dict[str, str],
        exchange: Exchange,
        record: AccessRecord,
    ) -> bool:
        """A CORS preflight: answered by the service when its route is passed through to it
        (its own KEEL_CORS_ORIGINS), else here when CORS is configured; whether it was."""
        asked = self.routes.find(headers["access-control-request-method"], path)
        if not isinstance(asked, Match) or asked.route.method.service not in self._passed:
            if not self.cors.origins:
                return False
            await self._preflight(path, headers, exchange)
            return True
        self._route(record, asked.route.rule.path)
        record.upstream = self._upstream(asked.route.method.service)
        await self.passthrough.forward(
            asked,
            scope,
            exchange=exchange,
            request_id=headers["x-request-id"],
            timeout=self._timeouts[id(asked.route.method)],
            body=None,
        )
        return True

    def _route(self, record: AccessRecord, route: str) -> None:
        if self.edge_span:
            record.matched(route)
        else:  # (no span to name: the route is all there is to record)
            record.route = route

    def _upstream(self, service: str) -> tuple[str, str] | None:
        """Where `service`'s requests go: (its REST address, "rest") when they pass through,
        else (its gRPC target, "grpc"); None while its gRPC address is not known (the call
        itself says why)."""
        known = self._upstreams.get(service)
        if known is None:
            pool = self._passed.get(service)
            if pool is not None:
                known = (pool.address, "rest")
            else:
                try:
                    known = (self.upstreams.target(self._services[service]), "grpc")
                except ConfigError:
                    return None
            self._upstreams[service] = known
        return known

    async def _pass(
        self,
        found: Match,
        scope: Scope,
        receive: Receive,
        headers: dict[str, str],
        exchange: Exchange,
    ) -> None:
        """A request for a service that serves REST itself: the edge's rate limit, body limit
        and deadline here, the rest (auth policy, validation, CORS) in the service; then passed
        through (keel.gateway.passthrough)."""
        route = found.route
        limiter = self.admission.limiter
        if limiter is not None:  # per client address: the gateway does not verify tokens here
            client = scope.get("client")
            if not limiter.allow(str((client or ("",))[0]), f"{route.verb} {route.rule.path}"):
                wait = [(b"retry-after", str(limiter.retry_after).encode())]
                message = "too many requests; slow down"
                await exchange.reply(
                    429, status.body(grpc.StatusCode.RESOURCE_EXHAUSTED, message), wait
                )
                return
        method = route.method
        try:
            body = await read_body(receive, self.max_body_bytes) if route.rule.body else None
            timeout = self._timeout(headers, method)
        except (BodyTooLargeError, InputError) as error:
            await exchange.reply(*self._refusal(error))
            return
        forwarding = self.passthrough.forward(
            found,
            scope,
            exchange=exchange,
            request_id=headers["x-request-id"],
            timeout=timeout,
            body=body,
        )
        if method.kind.server_streaming:  # a client going away closes the upstream request
            await dispatch.relay_until_gone(exchange, receive, forwarding)
        else:
            await forwarding

    def _timeout(self, headers: Mapping[str, str], method: MethodSpec[Any, Any]) -> float:
        """The upstream call's deadline: the request's own (`Grpc-Timeout`) within the edge's
        cap, else the method's (known per method: most requests set none)."""
        if "grpc-timeout" in headers:
            service = self._services[method.service]
            return outbound.deadline(headers, method, service, self.settings)
        return self._timeouts[id(method)]

    def _refusal(self, error: BodyTooLargeError | InputError) -> tuple[int, bytes]:
        """413 for a body over the limit, else 400 naming what is wrong with the input."""
        if isinstance(error, BodyTooLargeError):
            limit = f"the body is larger than {self.max_body_bytes} bytes"
            return 413, status.body(grpc.StatusCode.INVALID_ARGUMENT, limit)
        return 400, _bad_input(error)

    def _dispatch(
        self,
        found: Match,
        request: Any,
        timeout: float,
        metadata: outbound.Metadata,
        *,
        scope: Scope,
        receive: Receive,
        exchange: Exchange,
    ) -> Awaitable[None]:
        """The call a matched, admitted request became, answering it when awaited: here, the
        upstream service over gRPC (keel.gateway.dispatch). (Not a coroutine itself: the
        request awaits the call's own, a coroutine frame less.)"""
        call = dispatch.UpstreamCall(self.upstreams, found, request, timeout, metadata)
        if found.route.method.kind.server_streaming:
            return call.server_stream(exchange, receive, sse=wants_events(scope))
        return call.unary(exchange)

    async def _preflight(self, path: str, headers: Mapping[str, str], exchange: Exchange) -> None:
        """A CORS preflight (CORS configured): 204 with what the path allows, else 403."""
        origin = self.cors.allowed(headers.get("origin"))
        verbs = {v for v in self._verbs if isinstance(self.routes.find(v, path), Match)}
        if origin is None or not verbs:
            payload = status.body(grpc.StatusCode.PERMISSION_DENIED, "CORS preflight refused")
            await exchange.send_all(403, [*JSON], payload)
            return
        requested = headers.get("access-control-request-headers", "")
        allowed = self.cors.preflight(origin, verbs, requested)
        await exchange.send_all(204, allowed, b"")


async def _unrouted(
    verb: str, path: str, allowed: set[str] | None, routes: RouteTable, exchange: Exchange
) -> None:
    """404 for a path no route has; 405 with `Allow` for a method the path's routes lack. Either
    names the custom methods the path's resource has when it names one it lacks (a typo)."""
    meant = routes.custom_methods(path)
    hint = f"; did you mean {' or '.join(meant)}?" if meant else ""
    if not allowed:
        message = f"no route for {path}{hint}"
        await exchange.reply(404, status.body(grpc.StatusCode.NOT_FOUND, message))
        return
    allow = ", ".join(sorted(allowed))
    message = f"{verb} is not allowed on {path}; allowed: {allow}{hint}"
    await exchange.reply(
        405, status.body(grpc.StatusCode.UNIMPLEMENTED, message), [(b"allow", allow.encode())]
    )
