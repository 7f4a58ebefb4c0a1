"""Requests for services that serve their own REST routes, passed through to their REST ports.

The gateway has matched the route (404, 405 and unannotated methods are answered before this)
and applied what belongs to the edge: rate limits, the body size limit, the request id. The
request then goes on as it came (method, raw path and query, headers, body bytes) over a
kept-alive HTTP/1.1 connection (keel.gateway.pool), with:

- `X-Request-Id` (made if absent), `X-Forwarded-For` with the client appended,
  `X-Forwarded-Proto` and `X-Forwarded-Host` (set unless a proxy in front set them),
  `Grpc-Timeout` with the request's deadline as the gateway computed it (so KEEL_EDGE_TIMEOUT
  and KEEL_EDGE_MAX_TIMEOUT hold), `traceparent` of the gateway's own span when it traces;
- hop-by-hop headers (`Connection` and those it names, `Keep-Alive`, `TE`, `Upgrade`, ...),
  `Expect` and identity metadata headers (`Grpc-Metadata-X-Keel-*`) removed. `Authorization`
  goes on as it is: the service checks its own policy.

The answer comes back as the service sent it (status, headers, body), its hop-by-hop headers
removed; a streamed answer (NDJSON, SSE) is relayed chunk by chunk as it arrives, and a client
that goes away from a server-streaming route closes the upstream connection (the service then
cancels the method). Failures answer `google.rpc.Status` JSON: no connection 503 UNAVAILABLE,
no answer by the deadline 504 DEADLINE_EXCEEDED, a connection closed before the answer 502
UNAVAILABLE; once the answer has started, a broken upstream cuts the client's answer short.

A request that fails on a reused connection before any byte of its answer arrived is sent again
once, on a new connection, when repeating it is safe: an idempotent HTTP method (GET, HEAD,
PUT, DELETE, OPTIONS), a method the proto marks IDEMPOTENT or NO_SIDE_EFFECTS, or a request with
an `Idempotency-Key` (the service keeps its outcome). Another POST or PATCH is not: the service
may have run it before its connection broke. The pool never reuses a connection idle for 4 s
or more (uvicorn closes them at 5 s), so that case is rare.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping

import grpc
from opentelemetry import propagate

from keel.gateway import status
from keel.gateway.exchange import Exchange, Scope
from keel.gateway.pool import (
    Answer,
    BadAnswerError,
    ClosedError,
    Connection,
    Pool,
    TimedOutError,
    UnreachableError,
    UpstreamError,
)
from keel.gateway.routes import Match, RouteTable
from keel.runtime import discovery, tracing
from keel.runtime.config import ConfigError, Settings
from keel.runtime.logs import get_logger

_log = get_logger("keel.gateway")

GRACE = 0.5
"""Seconds past a request's deadline the gateway waits for the service's own answer (the
service enforces the same deadline and answers 504 itself)."""

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""Headers about one connection (RFC 9110 7.6.1), never forwarded either way."""
_NOT_FORWARDED = HOP_BY_HOP | {
    b"content-length",  # (set again for the body sent)
    b"expect",
    b"x-request-id",
    b"x-forwarded-for",
    b"grpc-timeout",
}
_DROPPED_ANSWER = HOP_BY_HOP | {b"content-length", b"date", b"server", b"x-request-id"}
"""Answer headers the gateway's own server writes again (its Date and Server, the length of
what it sends, the request id)."""
_IDENTITY = b"grpc-metadata-x-keel-"
_TRACE = (b"traceparent", b"tracestate")
_REPEATABLE = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
UPSTREAM_MODES = ("auto", "grpc", "rest")


def rest_addresses(
    routes: RouteTable,
    settings: Settings,
    given: Mapping[str, str] | None = None,
    mode: str | None = None,
) -> dict[str, str]:
    """The services with routes in `routes` that the gateway passes through to, with their
    REST `host:port`: by `mode`
    (default KEEL_GATEWAY_UPSTREAM): `grpc` none; `auto` those whose address `given` (full
    service name → address) or discovery (KEEL_REST_TARGET_*, the registry) knows; `rest`
    every one (ConfigError naming those without an address)."""
    mode = mode or settings.gateway_upstream
    if mode not in UPSTREAM_MODES:
        raise ConfigError(f"upstream {mode!r}: must be auto, grpc or rest")
    if mode == "grpc":
        return {}
    given = given or {}
    found: dict[str, str] = {}
    missing = []
    routed = {route.method.service for route in routes.routes}
    for service in routes.services:
        if service.name not in routed:
            continue  # (nothing of it is reachable over HTTP)
        address = given.get(service.name) or discovery.resolve_rest(service.name, settings)
        if address:
            found[service.name] = address
        else:
            missing.append(service.name)
    if mode == "rest" and missing:
        raise ConfigError(
            f"KEEL_GATEWAY_UPSTREAM=rest, but no REST address for {', '.join(missing)}: "
            "set KEEL_REST_TARGET_<SERVICE> or [rest_targets] in the registry"
        )
    return found


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def failure(error: UpstreamError, service: str) -> tuple[int, bytes]:
    """The gateway's answer to a request the upstream did not answer."""
    if isinstance(error, UnreachableError):
        code, http = grpc.StatusCode.UNAVAILABLE, 503
        message = f"{service} is unavailable ({error})"
    elif isinstance(error, TimedOutError):
        code, http = grpc.StatusCode.DEADLINE_EXCEEDED, 504
        message = f"{service} did not answer in time"
    elif isinstance(error, BadAnswerError):
        code, http = grpc.StatusCode.UNAVAILABLE, 502
        message = f"{service} answered with something other than HTTP/1.1"
    else:
        code, http = grpc.StatusCode.UNAVAILABLE, 502
        message = f"{service} closed the connection before answering"
    return http, status.body(code, message)


class Passthrough:
    """Connection pools to the REST ports of `addresses` (full service name → `host:port`;
    services in one process share one pool)."""

    def __init__(self, addresses: Mapping[str, str], *, limit: int = 256) -> None:
        by_address: dict[str, Pool] = {}
        self.pools: dict[str, Pool] = {}
        for service, address in addresses.items():
            pool = by_address.get(address)
            if pool is None:
                pool = by_address[address] = Pool(*_split(address), limit=limit)
            self.pools[service] = pool
        self._deadline_headers: dict[float, bytes] = {}

    def __bool__(self) -> bool:
        return bool(self.pools)

    def close(self) -> None:
        for pool in {id(p): p for p in self.pools.values()}.values():
            pool.close()

    def repeatable(self, match: Match, scope: Scope) -> bool:
        """Whether the request may be sent again after a reused connection broke."""
        route = match.route
        if route.verb in _REPEATABLE or route.method.idempotency.retryable:
            return True
        return any(name == b"idempotency-key" for name, _ in scope["headers"])

    def head(self, scope: Scope, request_id: str, timeout: float, body: bytes | None) -> bytes:
        """The request line and headers sent upstream."""
        query = scope["query_string"]
        target = scope.get("raw_path") or scope["path"].encode()
        if query:
            target += b"?" + query
        parts = [scope["method"].encode("latin-1"), b" ", target, b" HTTP/1.1\r\n"]
        forwarded_for = b""
        proto = forwarded_host = False
        host = b""
        named: list[bytes] = []
        for name, value in scope["headers"]:
            if name in _NOT_FORWARDED:
                if name == b"x-forwarded-for":
                    forwarded_for = value
                elif name == b"connection":
                    named += [t.strip().lower() for t in value.split(b",")]
                continue
            if name.startswith(_IDENTITY):
                continue
            if name == b"host":
                host = value
            elif name == b"x-forwarded-proto":
                proto = True
            elif name == b"x-forwarded-host":
                forwarded_host = True
            parts += (name, b": ", value, b"\r\n")
        if named and any(t not in (b"close", b"keep-alive", b"") for t in named):
            parts = _without(parts, set(named))
        if tracing.enabled():
            parts = _traced(parts)
        client = scope.get("client")
        if client:
            peer = client[0].encode("latin-1")
            forwarded_for = forwarded_for + b", " + peer if forwarded_for else peer
        if forwarded_for:
            parts += (b"x-forwarded-for: ", forwarded_for, b"\r\n")
        if not proto:
            parts += (b"x-forwarded-proto: ", scope.get("scheme", "http").encode(), b"\r\n")
        if host and not forwarded_host:
            parts += (b"x-forwarded-host: ", host, b"\r\n")
        if not host:
            parts.append(b"host: upstream\r\n")
        deadline = self._deadline_headers.get(timeout)
        if deadline is None:  # (a route's deadline is one of a few values: made once each)
            deadline = b"grpc-timeout: %dm\r\n" % math.ceil(timeout * 1000)
            if len(self._deadline_headers) < 1024:
                self._deadline_headers[timeout] = deadline
        parts += (b"x-request-id: ", request_id.encode("latin-1"), b"\r\n", deadline)
        if body is not None:
            parts.append(b"content-length: %d\r\n" % len(body))
        parts.append(b"\r\n")
        return b"".join(parts)

    async def forward(
        self,
        match: Match,
        scope: Scope,
        *,
        exchange: Exchange,
        request_id: str,
        timeout: float,
        body: bytes | None,
    ) -> None:
        """Send the request to its service's REST port and relay the answer to `exchange`."""
        service = match.route.method.service
        pool = self.pools[service]
        request = self.head(scope, request_id, timeout, body)
        if body:
            request += body
        head_only = scope["method"] == "HEAD"
        deadline = asyncio.get_running_loop().time() + timeout + GRACE
        connection: Connection | None = None
        try:
            connection = await pool.acquire(deadline)
            answer = connection.send(request, deadline, head_only=head_only)
            try:
                await answer.head()
            except ClosedError as closed:
                if closed.answered or not connection.reused or not self.repeatable(match, scope):
                    raise
                pool.release(connection)  # (closed: dropped)
                connection = None
                connection = await pool.connect(deadline)
                answer = connection.send(request, deadline, head_only=head_only)
                await answer.head()
            await _relay(answer, exchange, request_id, head_only, service)
        except UpstreamError as error:  # (after the answer started, _relay cuts it short)
            await exchange.reply(*failure(error, service))
        finally:  # (cancelled, when the client went away: the connection closes)
            if connection is not None:
                pool.release(connection)

    async def not_serving(self, timeout: float = 2.0) -> list[str]:
        """The passed-through services whose `/readyz` does not answer 200."""
        down = []
        for service, pool in self.pools.items():
            deadline = asyncio.get_running_loop().time() + timeout
            request = b"GET /readyz HTTP/1.1\r\nhost: upstream\r\n\r\n"
            connection = None
            try:
                connection = await pool.acquire(deadline)
                answer = connection.send(request, deadline)
                await answer.head()
                while await answer.more():
                    pass
                if answer.status != 200:
                    down.append(service)
            except UpstreamError:
                down.append(service)
            finally:
                if connection is not None:
                    pool.release(connection)
        return down


def _without(parts: list[bytes], names: set[bytes]) -> list[bytes]:
    """`parts` (the request line, then name, ": ", value, CRLF per header) without the headers
    in `names` (those a `Connection` header names: hop-by-hop too)."""
    kept = parts[:4]
    for at in range(4, len(parts), 4):
        if parts[at].lower() not in names:
            kept += parts[at : at + 4]
    return kept


def _traced(parts: list[bytes]) -> list[bytes]:
    """`parts` with the trace context of the gateway's current span in place of the client's
    (the service's span becomes the gateway span's child); as they were when there is none."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if not carrier:
        return parts
    kept = _without(parts, set(_TRACE))
    for key, value in carrier.items():
        kept += (key.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n")
    return kept


async def _relay(
    answer: Answer, exchange: Exchange, request_id: str, head_only: bool, service: str
) -> None:
    """The upstream's answer to the client: whole if it arrived whole, else chunk by chunk."""
    headers = [
        (name, value)
        for name, value in answer.headers
        if name.lower() not in _DROPPED_ANSWER or (head_only and name.lower() == b"content-length")
    ]
    headers.append((b"x-request-id", request_id.encode("latin-1")))
    if answer.complete:
        payload = answer.take()
        if not head_only:
            headers.append((b"content-length", b"%d" % len(payload)))
        exchange.status = answer.status
        send = exchange.send
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return
    await exchange.start(answer.status, headers)
    while True:
        try:
            chunk = await answer.more()
        except UpstreamError as error:  # the answer has started: it can only be cut short
            _log.warning("upstream answer cut short", service=service, reason=str(error))
            return  # (uvicorn closes the client's connection: the answer is incomplete)
        if not chunk:
            break
        await exchange.send({"type": "http.response.body", "body": chunk, "more_body": True})
    await exchange.send({"type": "http.response.body", "body": b""})
