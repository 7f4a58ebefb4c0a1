"""The base of every generated `<Service>Client` class.

Each call: a deadline (the call's `timeout=`, else the method's, the service's, then
KEEL_DEFAULT_TIMEOUT; never later than the deadline of the call being handled), propagated
metadata (correlation id, trace context, caller identity), the target's circuit breaker,
native retries for idempotent methods and for those that take an idempotency key (a fresh
key per call unless the caller's metadata has one; see channels) and go-grpc-prometheus client
metrics.
A failed call raises the `keel.errors` class of its status, details parsed (see keel.errors).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self, TypeAlias

import grpc
import grpc.aio
from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker

from keel.errors import DeadlineExceeded, KeelError, from_rpc_error
from keel.runtime import breaker as circuit
from keel.runtime import config, discovery, propagation, tally, tracing
from keel.runtime.breaker import BREAKERS, CLOSED
from keel.runtime.channels import IDEMPOTENCY_KEY, open_channel, takes_key
from keel.runtime.config import Settings
from keel.runtime.metrics import client_metrics
from keel.runtime.spec import MethodSpec, RequestT, ResponseT, ServiceSpec

Metadata: TypeAlias = Sequence[tuple[str, str | bytes]]
"""Call metadata: (key, value) pairs; keys ending in `-bin` carry bytes."""


class _Method:
    """What a client keeps per method: its call counts, its default deadline (the method's, else
    the service's, else KEEL_DEFAULT_TIMEOUT) and the channel's callable."""

    __slots__ = ("counts", "keyed", "multi", "path", "timeout")

    def __init__(self, client: ClientBase, spec: MethodSpec[Any, Any]) -> None:
        self.path = spec.path
        self.keyed = takes_key(spec)
        self.counts = client_metrics().counts(spec)
        timeout = spec.timeout
        if timeout is None:
            service = getattr(client, "__keel_service__", None)
            if service is not None and service.name == spec.service:
                timeout = service.default_timeout
        self.timeout: float = client._settings.default_timeout if timeout is None else timeout
        factory = getattr(client._channel, spec.kind.value)
        self.multi: Any = factory(
            spec.path,
            request_serializer=spec.request_type.SerializeToString,
            response_deserializer=spec.response_type.FromString,
            _registered_method=True,
        )

    def deadline(self, timeout: float | None) -> float:
        """The call's deadline in seconds from now: `timeout` or the default, never later than
        the deadline of the call being handled (DEADLINE_EXCEEDED if none is left)."""
        chosen = self.timeout if timeout is None else timeout
        remaining = propagation.remaining()
        if remaining is None:
            return chosen
        if remaining <= 0:
            raise DeadlineExceeded(f"{self.path}: the inbound call's deadline has passed")
        return min(chosen, remaining)


class _CallScope:
    """One call's scope (`async with`): its deadline and metadata once entered, its breaker,
    span and counts. A class rather than a generator, with the counting inlined, because a
    call's Python time counts several times over in a loaded process."""

    __slots__ = (
        "_began",
        "_breaker",
        "_client",
        "_method",
        "_span",
        "_span_scope",
        "metadata",
        "timeout",
    )

    def __init__(
        self, client: ClientBase, method: _Method, timeout: float | None, metadata: Metadata | None
    ) -> None:
        self._client = client
        self._method = method
        self.timeout: Any = timeout
        """The call's deadline in seconds once entered (the requested one before)."""
        self.metadata: Any = metadata
        """The call's outbound metadata once entered (the caller's before)."""
        self._began = 0.0
        self._span_scope: Any = None
        self._span: Any = None
        self._breaker: AsyncCircuitBreaker | None = None

    async def __aenter__(self) -> _CallScope:
        client, method = self._client, self._method
        method.counts[tally.STARTED] += 1
        self._began = time.perf_counter()
        self.metadata = propagation.outbound_metadata(self.metadata)
        if method.keyed and all(key != IDEMPOTENCY_KEY for key, _ in self.metadata):
            self.metadata.append((IDEMPOTENCY_KEY, str(uuid.uuid4())))
        tracer = tracing.tracer()
        if tracer is not None:
            self._span_scope = tracing.client_span(tracer, method.path, self.metadata)
            self._span = self._span_scope.__enter__()
        try:
            self.timeout = method.deadline(self.timeout)
            breaker = client._breaker or await client._circuit()
            if breaker.context.state != CLOSED:  # a closed circuit has nothing to do on entry
                await circuit.enter(breaker, client._target)
            self._breaker = breaker
        except BaseException as error:
            await self.__aexit__(type(error), error, error.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        code = grpc.StatusCode.OK
        typed: KeelError | None = None
        if exc is None:
            pass
        elif isinstance(exc, KeelError):
            code = exc.code()
        elif isinstance(exc, grpc.aio.AioRpcError):
            code = exc.code()
            typed = from_rpc_error(exc)  # (the breaker's own too)
        else:
            code = grpc.StatusCode.CANCELLED
        try:
            breaker = self._breaker
            if breaker is not None and (exc is not None or circuit.counting(breaker)):
                await breaker.__aexit__(exc_type, exc, tb)
        finally:
            if self._span_scope is not None:
                tracing.finish(self._span, code)
                self._span_scope.__exit__(exc_type, exc, tb)
            tally.finish(self._method.counts, code, time.perf_counter() - self._began)
        if typed is not None:
            raise typed from None


class ClientBase:
    """A typed client of one service over a grpc.aio channel.

    `Client.connect()` finds the service through discovery (KEEL_TARGET_<SERVICE>, the
    registry file); `Client.connect("host:port")` names the target; both open a channel with
    retries and round-robin balancing that the client closes on `await client.close()` or at
    the end of its `async with` block. `Client(channel)` uses a channel you own as it is.

    `_unary` and `_stream` serve any MethodSpec (of any service) on this client's channel.
    """

    __keel_service__: ClassVar[ServiceSpec]

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        target: str = "",
        settings: Settings | None = None,
        _owns_channel: bool = False,
    ) -> None:
        self._channel = channel
        self._target = target or f"channel-{id(channel):x}"
        self._settings = settings or config.current()
        self._owns_channel = _owns_channel
        self._breaker: AsyncCircuitBreaker | None = None
        self._methods: dict[str, _Method] = {}

    @classmethod
    def connect(
        cls,
        target: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        settings: Settings | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> Self:
        """A client on a new channel to `target`, or to where discovery says the service is.

        `interceptors` (grpc.aio client interceptors) see every call, in order.
        """
        settings = settings or config.current()
        spec = cls.__keel_service__
        uri = target if target is not None else discovery.resolve(spec.name, settings)
        channel = open_channel(
            uri, spec, settings, credentials=credentials, options=options, interceptors=interceptors
        )
        return cls(channel, target=uri, settings=settings, _owns_channel=True)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying channel."""
        return self._channel

    async def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _method(self, spec: MethodSpec[Any, Any]) -> _Method:
        method = self._methods.get(spec.path)
        if method is None:
            method = self._methods[spec.path] = _Method(self, spec)
        return method

    def _timeout(self, spec: MethodSpec[Any, Any], timeout: float | None) -> float:
        """The call's deadline in seconds from now (raises DEADLINE_EXCEEDED if none is left)."""
        return self._method(spec).deadline(timeout)

    def _callable(self, spec: MethodSpec[Any, Any]) -> Any:
        """The channel's callable for `spec`."""
        return self._method(spec).multi

    async def _circuit(self) -> AsyncCircuitBreaker:
        """The target's circuit breaker (looked up once per client)."""
        if self._breaker is None:
            settings = self._settings
            self._breaker = await BREAKERS.breaker(
                self._target, settings.breaker_threshold, settings.breaker_reset
            )
        return self._breaker

    def _call(
        self, spec: MethodSpec[Any, Any], timeout: float | None, metadata: Metadata | None
    ) -> _CallScope:
        """Around one call: deadline, metadata, span, circuit breaker, metrics, typed errors."""
        return _CallScope(self, self._method(spec), timeout, metadata)

    async def _unary(
        self, spec: MethodSpec[Any, Any], request: Any, timeout: float | None, metadata: Any
    ) -> Any:
        method = self._methods.get(spec.path) or self._method(spec)
        async with _CallScope(self, method, timeout, metadata) as call:
            response = await method.multi(request, timeout=call.timeout, metadata=call.metadata)
            method.counts[tally.RECEIVED] += 1
            return response

    async def _stream(
        self, spec: MethodSpec[Any, Any], request: Any, timeout: float | None, metadata: Any
    ) -> AsyncIterator[Any]:
        method = self._method(spec)
        async with _CallScope(self, method, timeout, metadata) as call:
            responses = method.multi(request, timeout=call.timeout, metadata=call.metadata)
            async for response in responses:
                method.counts[tally.RECEIVED] += 1
                yield response

    async def _unary_unary(
        self,
        spec: MethodSpec[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> ResponseT:
        response: ResponseT = await self._unary(spec, request, timeout, metadata)
        return response

    async def _unary_stream(
        self,
        spec: MethodSpec[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> AsyncIterator[ResponseT]:
        async for response in self._stream(spec, request, timeout, metadata):
            yield response

    async def _stream_unary(
        self,
        spec: MethodSpec[RequestT, ResponseT],
        requests: AsyncIterable[RequestT],
        *,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> ResponseT:
        response: ResponseT = await self._unary(spec, requests, timeout, metadata)
        return response

    async def _stream_stream(
        self,
        spec: MethodSpec[RequestT, ResponseT],
        requests: AsyncIterable[RequestT],
        *,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> AsyncIterator[ResponseT]:
        async for response in self._stream(spec, requests, timeout, metadata):
            yield response
