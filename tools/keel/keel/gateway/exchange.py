"""Writing one HTTP response over ASGI: whole JSON answers, or a stream of items."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON: Headers = [(b"content-type", b"application/json")]


class Exchange:
    """One HTTP response being written: headers every answer carries, its status once started."""

    __slots__ = ("extra", "send", "status")

    def __init__(self, send: Send, extra: Headers) -> None:
        self.send = send
        self.extra = extra
        """Headers added to whatever the answer is (request id, CORS)."""
        self.status = 0
        """The HTTP status sent (0 until the response starts)."""

    @property
    def started(self) -> bool:
        return self.status != 0

    async def start(self, code: int, headers: Headers) -> None:
        self.status = code
        await self.send({"type": "http.response.start", "status": code, "headers": headers})

    async def send_all(self, code: int, headers: Headers, body: bytes) -> None:
        """A whole response; `headers` (a list of its own) gets the content length."""
        headers.append((b"content-length", b"%d" % len(body)))
        self.status = code
        await self.send({"type": "http.response.start", "status": code, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def reply(self, code: int, payload: bytes, more: Headers | None = None) -> None:
        """A whole response: JSON unless `more` names another content type."""
        if more is None:
            headers = [*JSON, *self.extra, (b"content-length", b"%d" % len(payload))]
        else:
            if any(key == b"content-type" for key, _ in more):
                headers = [*more, *self.extra]
            else:
                headers = [*JSON, *more, *self.extra]
            headers.append((b"content-length", b"%d" % len(payload)))
        # (send_all's steps written out: a coroutine less for every answer)
        self.status = code
        await self.send({"type": "http.response.start", "status": code, "headers": headers})
        await self.send({"type": "http.response.body", "body": payload})


class ItemStream:
    """A streamed answer: headers before the first item, then newline-delimited JSON items or
    Server-Sent Events (`sse`)."""

    __slots__ = ("exchange", "sse")

    def __init__(self, exchange: Exchange, sse: bool) -> None:
        self.exchange = exchange
        self.sse = sse

    async def _start(self) -> None:
        kind = b"text/event-stream" if self.sse else b"application/x-ndjson"
        headers = [(b"content-type", kind), (b"cache-control", b"no-cache"), *self.exchange.extra]
        await self.exchange.start(200, headers)

    async def item(self, payload: bytes, event: bytes = b"") -> None:
        if not self.exchange.started:
            await self._start()
        if self.sse:
            head = b"event: " + event + b"\n" if event else b""
            chunk = head + b"data: " + payload + b"\n\n"
        else:
            chunk = payload + b"\n"
        await self.exchange.send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end(self) -> None:
        if not self.exchange.started:
            await self._start()
        await self.exchange.send({"type": "http.response.body", "body": b""})


async def disconnected(receive: Receive) -> None:
    """Return once the client has gone away (the request body is read and dropped)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class BodyTooLargeError(Exception):
    """The request body is larger than the gateway accepts."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; BodyTooLargeError past `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)
