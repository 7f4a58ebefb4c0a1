"""A REST request answered in the service's own process: the method's behaviour called directly.

The behaviour is the one keel.runtime.handlers builds for the gRPC server (verified caller,
validation, errors, metrics and spans), called with an `HttpCallContext`: a
`grpc.aio.ServicerContext` whose metadata, deadline and peer come from the HTTP request. What a
handler does to end a call (`abort()`, `set_code()`, trailing metadata with the
`google.rpc.Status` details) becomes the same HTTP error the gateway answers for that status.
No gRPC hop: no serialization, no channel, no second server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import types
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, NoReturn

import grpc
import grpc.aio
from google.protobuf.descriptor import Descriptor
from google.rpc import status_pb2

from keel.gateway import status
from keel.gateway.dispatch import relay_until_gone, reply_ok
from keel.gateway.exchange import Exchange, ItemStream, Receive
from keel.gateway.routes import Match
from keel.gateway.transcode import response_body

Behaviour = Callable[..., Any]
"""A method's behaviour as keel.runtime.handlers builds it: `(request, context)` → a response
(unary) or an async iterator of responses (server streaming)."""
DETAILS_KEY = "grpc-status-details-bin"


class HttpCallContext:
    """grpc.aio's servicer context for a call made from an HTTP request in this process.

    Metadata, deadline and peer come from the request; `abort()` records the status and raises
    `grpc.aio.AbortError` as grpc does; `set_code()`, `set_details()` and trailing metadata are
    kept for the answer (`failure()`). Reading or writing messages is not for REST calls.
    """

    __slots__ = (
        "_client",
        "_code",
        "_deadline",
        "_details",
        "_done",
        "_initial",
        "_metadata",
        "_trailing",
        "expired",
    )

    def __init__(
        self, metadata: Sequence[tuple[str, Any]], timeout: float, client: tuple[str, int] | None
    ) -> None:
        self._metadata = metadata
        self._deadline = time.monotonic() + timeout
        self._client = client
        self.expired = False
        """Whether the deadline passed (the call was cancelled for it)."""
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: tuple[tuple[str, Any], ...] = ()
        self._initial: tuple[tuple[str, Any], ...] = ()
        self._done: list[Callable[[Any], None]] | None = None

    def invocation_metadata(self) -> Sequence[tuple[str, Any]]:
        return self._metadata

    def time_remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def peer(self) -> str:
        """A gRPC-style peer (`ipv4:127.0.0.1:5000`) for the request's client address."""
        client = self._client
        if not client:
            return "unknown"
        host, port = client[0], client[1]
        return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Iterable[tuple[str, Any]] = (),
    ) -> NoReturn:
        if code is grpc.StatusCode.OK:
            raise ValueError("abort() needs a status other than OK")
        self._code, self._details = code, details
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        raise grpc.aio.AbortError

    async def abort_with_status(self, found: grpc.Status) -> NoReturn:
        await self.abort(found.code, found.details, found.trailing_metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, trailing_metadata: Iterable[tuple[str, Any]]) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailing

    async def send_initial_metadata(self, initial_metadata: Iterable[tuple[str, Any]]) -> None:
        self._initial = tuple(initial_metadata)

    async def read(self) -> Any:
        raise NotImplementedError("a REST call has no stream of requests")

    async def write(self, message: Any) -> None:
        raise NotImplementedError("a REST call's responses are the method's return or yields")

    def set_compression(self, compression: grpc.Compression) -> None:
        """Compression is HTTP's business here (nothing to do)."""

    def disable_next_message_compression(self) -> None:
        """Compression is HTTP's business here (nothing to do)."""

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return {}

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._done is None:
            self._done = []
        self._done.append(callback)

    def finish(self) -> None:
        """Run the done callbacks (the call has ended)."""
        if self._done is not None:
            for callback in self._done:
                callback(self)
            self._done = None

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return self._done is None and self._code is not None

    @property
    def failed(self) -> bool:
        """Whether the call ended with a status other than OK (by abort or set_code)."""
        return self._code is not None and self._code is not grpc.StatusCode.OK

    def failure(self, request: Descriptor | None = None) -> tuple[int, bytes]:
        """HTTP status and google.rpc.Status JSON of the status the call ended with, details
        (`grpc-status-details-bin`) included, as the gateway renders them (field paths named
        as in `request`'s JSON)."""
        code = self._code or grpc.StatusCode.UNKNOWN
        for key, value in self._trailing:
            if key == DETAILS_KEY and isinstance(value, bytes):
                found = status_pb2.Status.FromString(value)
                if found.code == code.value[0]:
                    return status.HTTP_STATUS.get(code, 500), status.from_status(found, request)
        payload = status.body(code, self._details or code.name)
        return status.HTTP_STATUS.get(code, 500), payload


grpc.aio.ServicerContext.register(HttpCallContext)

_DEADLINE = status.body(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")


def _expire(task: asyncio.Task[Any], context: HttpCallContext) -> None:
    context.expired = True
    task.cancel()


async def unary(
    behaviour: Behaviour, match: Match, request: Any, context: HttpCallContext, exchange: Exchange
) -> None:
    """Call a unary method's behaviour in this process and answer: its response, or the status
    it ended with. The deadline is enforced as grpc enforces it: the method is cancelled when
    it passes (504 DEADLINE_EXCEEDED)."""
    try:
        response = await _within_deadline(behaviour(request, context), context)
    except grpc.aio.AbortError:
        await exchange.reply(*context.failure(request.DESCRIPTOR))
        return
    except asyncio.CancelledError:
        if not _expired(context):
            raise
        await exchange.reply(504, _DEADLINE)
        return
    finally:
        if context._done is not None:
            context.finish()
    code = context._code
    if code is not None and code is not grpc.StatusCode.OK:  # set_code() and a return:
        # grpc answers the status, not the message
        await exchange.reply(*context.failure(request.DESCRIPTOR))
        return
    await reply_ok(exchange, match, response)


class LocalCall:
    """The server-streaming call a REST request becomes, made in this process: the method's
    behaviour, its message, deadline, metadata and the client's address (the peer). The
    deadline is enforced as grpc enforces it: the method is cancelled when it passes (504
    DEADLINE_EXCEEDED before the first message, a last error item after)."""

    __slots__ = ("behaviour", "context", "match", "request", "timeout")

    def __init__(
        self,
        behaviour: Behaviour,
        match: Match,
        request: Any,
        timeout: float,
        metadata: Sequence[tuple[str, Any]],
        *,
        client: tuple[str, int] | None,
    ) -> None:
        self.behaviour = behaviour
        self.match = match
        self.request = request
        self.timeout = timeout
        self.context = HttpCallContext(metadata, timeout, client)

    def _deadline(self) -> asyncio.TimerHandle:
        task = asyncio.current_task()
        assert task is not None  # (called from a request's task)
        return asyncio.get_running_loop().call_later(self.timeout, _expire, task, self.context)

    async def server_stream(self, exchange: Exchange, receive: Receive, *, sse: bool) -> None:
        """Relay the responses until the method ends or the client goes away (which cancels
        it, as a cancelled gRPC call is)."""
        await relay_until_gone(exchange, receive, self._relay(ItemStream(exchange, sse)))

    async def _relay(self, items: ItemStream) -> None:
        context = self.context
        responses: AsyncIterator[Any] = self.behaviour(self.request, context)
        deadline = self._deadline()
        try:
            await self._items(responses, items)
        except grpc.aio.AbortError:
            await _fail(items, *context.failure(self.request.DESCRIPTOR))
            return
        except asyncio.CancelledError:
            if not _expired(context):
                raise
            await _fail(items, 504, _DEADLINE)
            return
        finally:
            deadline.cancel()
            context.finish()
        if context.failed:
            await _fail(items, *context.failure(self.request.DESCRIPTOR))
            return
        await items.end()

    async def _items(self, responses: AsyncIterator[Any], items: ItemStream) -> None:
        try:
            async for response in responses:
                await items.item(b'{"result":' + response_body(self.match, response) + b"}")
        except asyncio.CancelledError:
            # Cancelled while writing (the client left, or the deadline): the method is
            # cancelled where it waits, as grpc cancels it, so it records CANCELLED.
            frame = getattr(responses, "ag_frame", None)
            if frame is not None:
                with contextlib.suppress(BaseException):
                    await responses.athrow(asyncio.CancelledError())  # type: ignore[attr-defined]
            raise


@types.coroutine
def _within_deadline(call: Any, context: HttpCallContext) -> Generator[Any, None, Any]:
    """Await `call` (a unary behaviour's coroutine), cancelled when the context's deadline
    passes. The timer is set when the call first waits: one that answers without waiting
    (nothing can cancel it then, the timer could only fire after it) costs no timer."""
    if not isinstance(call, types.CoroutineType):
        return (yield from _timed(call.__await__(), context))
    try:
        waiting = call.send(None)
    except StopIteration as done:
        return done.value
    return (yield from _timed(call.__await__(), context, waiting))


def _timed(steps: Generator[Any, None, Any], context: HttpCallContext, *first: Any) -> Any:
    """The rest of a call from `first` (what its first step waits for, if taken), with its
    deadline armed: delegated as `await` delegates, to the task running it."""
    task = asyncio.current_task()
    assert task is not None  # (called from a request's task)
    remaining = max(0.0, context._deadline - time.monotonic())
    timer = asyncio.get_running_loop().call_later(remaining, _expire, task, context)
    try:
        while first:
            try:
                yield first[0]
            except BaseException as error:  # a cancellation thrown in by the task: pass it on
                try:
                    first = (steps.throw(error),)
                except StopIteration as done:
                    return done.value
                continue
            break  # resumed: the call goes on from where it waited
        return (yield from steps)
    finally:
        timer.cancel()


def _expired(context: HttpCallContext) -> bool:
    """Whether a CancelledError is the deadline's (then the task's cancel is taken back)."""
    if not context.expired:
        return False
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    return True


async def _fail(items: ItemStream, code: int, payload: bytes) -> None:
    """A streamed call's error: the HTTP status before the first message, a last item after."""
    if items.exchange.started:
        await items.item(b'{"error":' + payload + b"}", event=b"error")
        await items.end()
    else:
        await items.exchange.reply(code, payload)
