"""A matched, admitted request's upstream call and its HTTP answer: unary, or server streaming.

Server streaming answers newline-delimited JSON (`{"result": ...}` per message) or Server-Sent
Events. Until the first message the HTTP status still says how the call went; after it, an error
arrives as a last `{"error": ...}` item. A client that goes away cancels the upstream call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Coroutine
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message
from grpc_status import rpc_status

from keel.gateway import status
from keel.gateway.exchange import Exchange, ItemStream, Receive, disconnected
from keel.gateway.routes import Match
from keel.gateway.transcode import raw_response, response_body
from keel.gateway.upstream import Upstreams
from keel.runtime.client import Metadata
from keel.runtime.logs import get_logger

_log = get_logger("keel.gateway")
CLIENT_CLOSED = 499
"""The status logged for a request whose client went away before its answer."""


def failure(match: Match, error: BaseException) -> tuple[int, bytes]:
    """HTTP status and google.rpc.Status JSON for a failed upstream call."""
    if isinstance(error, grpc.aio.AioRpcError):
        code = error.code()
        found = rpc_status.from_call(error)  # type: ignore[arg-type]
        payload = (
            status.from_status(found, match.route.method.request_type.DESCRIPTOR)
            if found is not None
            else status.body(code, error.details() or code.name)
        )
        return status.HTTP_STATUS.get(code, 500), payload
    _log.error("gateway call failed", method=match.route.method.path, exc_info=error)
    return 500, status.body(grpc.StatusCode.INTERNAL, "internal error")


def reply_ok(exchange: Exchange, match: Match, response: Message) -> Awaitable[None]:
    """The 200 answer to a unary call's response, sent when awaited: its JSON (or its
    response_body field's), or the bytes of a google.api.HttpBody with its content type. (Not
    a coroutine itself: the caller awaits the reply's own, a coroutine frame less.)"""
    if match.route.http_body is not False:  # (most answers are JSON: known from the route)
        raw = raw_response(match, response)
        if raw is not None:
            return exchange.reply(200, raw[1], [(b"content-type", raw[0].encode())])
    return exchange.reply(200, response_body(match, response))


async def relay_until_gone(
    exchange: Exchange, receive: Receive, relaying: Coroutine[Any, Any, None]
) -> None:
    """Run `relaying` (a streamed answer) until it ends or the client goes away, which cancels
    it (the call with it) and logs the request as CLIENT_CLOSED."""
    relay = asyncio.ensure_future(relaying)
    gone = asyncio.ensure_future(disconnected(receive))
    try:
        await asyncio.wait((relay, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not relay.done():  # the client went away: cancel the call with the relay
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            exchange.status = CLIENT_CLOSED
    if not relay.cancelled():
        relay.result()  # a bug in the relay is raised here, where the edge answers it


class UpstreamCall:
    """The gRPC call a request becomes: its method (in `match`), message, deadline, metadata."""

    __slots__ = ("match", "metadata", "request", "timeout", "upstreams")

    def __init__(
        self, upstreams: Upstreams, match: Match, request: Any, timeout: float, metadata: Metadata
    ) -> None:
        self.upstreams = upstreams
        self.match = match
        self.request = request
        self.timeout = timeout
        self.metadata = metadata

    async def unary(self, exchange: Exchange) -> None:
        method = self.match.route.method
        client = self.upstreams.client(method.service)
        try:
            response = await client._unary(method, self.request, self.timeout, self.metadata)
        except grpc.aio.AioRpcError as error:
            await exchange.reply(*failure(self.match, error))
            return
        await reply_ok(exchange, self.match, response)

    async def server_stream(self, exchange: Exchange, receive: Receive, *, sse: bool) -> None:
        """Relay the responses until the call ends or the client goes away (which cancels it)."""
        await relay_until_gone(exchange, receive, self._relay(ItemStream(exchange, sse)))

    async def _relay(self, items: ItemStream) -> None:
        method = self.match.route.method
        responses = self.upstreams.stream(method, self.request, self.timeout, self.metadata)
        try:
            async for response in responses:
                await items.item(b'{"result":' + response_body(self.match, response) + b"}")
        except grpc.aio.AioRpcError as error:
            code, payload = failure(self.match, error)
            if items.exchange.started:
                await items.item(b'{"error":' + payload + b"}", event=b"error")
            else:
                await items.exchange.reply(code, payload)
                return
        await items.end()
