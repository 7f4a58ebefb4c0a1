"""HTTP/1.1 to the services' own REST ports: kept-alive connections per address, answers parsed
by httptools (llhttp, as uvicorn parses requests), read as they arrive.

Small on purpose: the gateway sends requests it has already checked (one `Content-Length` body,
no `Expect`, no upgrades) to Keel services (uvicorn) and relays whatever comes back. Measured
against aiohttp's client for this job, see docs/gateway.md ("One entry point in front of many
services").

- A connection answers one request at a time; after a complete answer that keeps the connection
  alive it goes back to its address's idle list (last in, first out), unless the list is full.
- At most `limit` connections per address; a request past it waits for one to come back.
- A connection idle for IDLE_REUSE seconds or more is closed rather than reused: uvicorn closes
  a kept-alive connection after 5 s, and a request sent as it does so is lost in between.
- Failures: `UnreachableError` (no connection could be made), `ClosedError` (the upstream closed the
  connection before the answer was complete; `answered` says whether any byte of it came),
  `BadAnswerError` (not HTTP/1.x), `TimedOutError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

import httptools

IDLE_REUSE = 4.0
"""Seconds a connection may have been idle and still be reused (uvicorn's keep-alive is 5)."""
HIGH_WATER = 1 << 18
"""Bytes of an answer buffered before the connection stops reading (until they are taken)."""


class UpstreamError(Exception):
    """A request to a REST upstream failed."""


class UnreachableError(UpstreamError):
    """No connection to the address (refused, unreachable, not resolvable)."""


class ClosedError(UpstreamError):
    """The upstream closed the connection before its answer was complete."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered
        """Whether any byte of the answer had arrived."""


class BadAnswerError(UpstreamError):
    """The upstream's answer is not valid HTTP/1.x."""


class TimedOutError(UpstreamError):
    """No complete answer by the request's deadline."""


class Answer:
    """One response as it arrives: status and headers (names as sent), then body chunks."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_connection",
        "_waiter",
        "complete",
        "error",
        "headers",
        "keep_alive",
        "received",
        "status",
    )

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.status = 0
        """The HTTP status, once the headers are complete (0 before)."""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.keep_alive = False
        self.received = False
        """Whether any byte of the answer has arrived."""
        self.error: UpstreamError | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None and not self.complete:
            self.error = error
            self._wake()

    async def _next(self) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        await waiter

    async def head(self) -> None:
        """Until the status and headers arrived (the error if the request failed first)."""
        while not self.status:
            if self.error is not None:
                raise self.error
            await self._next()

    def take(self) -> bytes:
        """The body bytes arrived since the last `take`."""
        chunks = self._chunks
        if not chunks:
            return b""
        self._chunks = []
        if self._buffered > HIGH_WATER:
            self._connection.resume()
        self._buffered = 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def more(self) -> bytes:
        """The next body bytes (b"" once the answer is complete); the error if it broke."""
        while not self._chunks:
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            await self._next()
        return self.take()

    def _body(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER:
            self._connection.pause()
        self._wake()


class Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection to an upstream (httptools parses its answers)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self.answer: Answer | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._timer: asyncio.TimerHandle | None = None
        self._head_only = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if answer is None:  # nothing asked: the upstream is not speaking HTTP to us
            self.close()
            return
        answer.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            answer._fail(BadAnswerError(f"the upstream's answer is not HTTP/1.1: {error}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close the connection (the transport calls connection_lost)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        answer = self.answer
        if answer is not None and not answer.complete:
            if answer.status and self._head_only:
                answer.complete = True  # (an answer to HEAD has no body)
                answer._wake()
                return
            message = "the upstream closed the connection"
            answer._fail(ClosedError(message, answered=answer.received))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.answer is not None:
            self.answer.headers.append((name, value))

    def on_headers_complete(self) -> None:
        answer = self.answer
        if answer is None:
            return
        answer.status = self._parser.get_status_code()
        if answer.status < 200:  # 1xx: an interim answer; the real one follows
            answer.status = 0
            answer.headers = []
            return
        answer.keep_alive = self._parser.should_keep_alive()
        if self._head_only:  # no body follows, whatever Content-Length says: done
            answer.keep_alive = False  # (the parser would wait for one: not reused)
            answer.complete = True
            self._stop_timer()
        answer._wake()

    def on_body(self, body: bytes) -> None:
        answer = self.answer
        if answer is not None and not self._head_only:
            answer._body(body)

    def on_message_complete(self) -> None:
        answer = self.answer
        if answer is None or not answer.status:  # (the end of a 1xx)
            return
        if not answer.complete:
            answer.complete = True
            self._stop_timer()
            answer._wake()

    # used by the pool and the caller

    def send(self, request: bytes, deadline: float, *, head_only: bool = False) -> Answer:
        """Write `request` (the whole of it); its answer, failed with TimedOutError if it is
        not complete by `deadline` (the event loop's time)."""
        answer = self.answer = Answer(self)
        self._head_only = head_only
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(deadline, self._expired)
        if self.transport is None or self.closed or self.transport.is_closing():
            answer._fail(ClosedError("the upstream closed the connection", answered=False))
        else:
            self.transport.write(request)
        return answer

    def _expired(self) -> None:
        self._timer = None
        if self.answer is not None:
            self.answer._fail(TimedOutError("the upstream did not answer in time"))
        self.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    @property
    def reusable(self) -> bool:
        answer = self.answer
        return (
            not self.closed
            and answer is not None
            and answer.complete
            and answer.keep_alive
            and not answer._chunks
        )

    def close(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Kept-alive connections to one address (`host`, `port`), at most `limit` at once."""

    def __init__(self, host: str, port: int, *, limit: int = 256, idle: int = 64) -> None:
        self.host = host.strip("[]")
        self.port = port
        self.limit = limit
        self.max_idle = idle
        self._idle: list[Connection] = []
        self._count = 0
        """Connections open or being opened (idle ones included)."""
        self._waiting: deque[asyncio.Future[Connection | None]] = deque()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def acquire(self, deadline: float) -> Connection:
        """A connection to send one request on: an idle one (`reused` set) or a new one, by
        `deadline` (the event loop's time)."""
        idle = self._idle
        if idle:
            now = time.monotonic()
            while idle:
                connection = idle.pop()
                if not connection.closed and now - connection.idle_since < IDLE_REUSE:
                    connection.reused = True
                    return connection
                self._drop(connection)
        if self._count >= self.limit:
            waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    handed = await waiter
            except TimeoutError:
                raise TimedOutError("no connection to the upstream came free in time") from None
            finally:
                if not waiter.done():
                    waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
            if handed is not None:
                handed.reused = True
                return handed
            return await self._open(deadline)  # (a connection closed: its place is ours)
        return await self.connect(deadline)

    async def connect(self, deadline: float) -> Connection:
        """A new connection (counted against the limit), whatever is idle; `deadline` is the
        event loop's time."""
        self._count += 1
        return await self._open(deadline)

    async def _open(self, deadline: float) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await loop.create_connection(Connection, self.host, self.port)
        except TimeoutError:
            self._gone()
            raise TimedOutError(f"no connection to {self.address} in time") from None
        except OSError as error:
            self._gone()
            reason = error.strerror or str(error) or type(error).__name__
            raise UnreachableError(f"cannot connect to {self.address}: {reason}") from None
        except BaseException:
            self._gone()
            raise
        return connection

    def release(self, connection: Connection) -> None:
        """Give back a connection after its answer was read (or abandoned: then it closes)."""
        if not connection.reusable:
            self._drop(connection)
            return
        connection.answer = None
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        if len(self._idle) >= self.max_idle:
            self._drop(connection)
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    def _drop(self, connection: Connection) -> None:
        connection.close()
        self._gone()

    def _gone(self) -> None:
        """One connection less: a request waiting for one may open its own."""
        self._count -= 1
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._count += 1  # (its place, taken by the waiter's new connection)
                return

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._count -= len(self._idle)
        self._idle.clear()
