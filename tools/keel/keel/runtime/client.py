"""The base of every generated `<Service>Client` class.

Each call: a deadline (the call's `timeout=`, else the method's, the service's, then
KEEL_DEFAULT_TIMEOUT; never later than the deadline of the call being handled), propagated
metadata (correlation id, trace context, caller identity), the target's circuit breaker,
native retries for idempotent methods (see channels) and go-grpc-prometheus client metrics.
A failed call raises the `keel.errors` class of its status, details parsed (see keel.errors).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, Self, TypeAlias

import grpc
import grpc.aio
from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker

from keel.errors import DeadlineExceeded, KeelError, from_rpc_error
from keel.runtime import breaker as circuit
from keel.runtime import config, discovery, propagation, tracing
from keel.runtime.breaker import BREAKERS
from keel.runtime.channels import open_channel
from keel.runtime.config import Settings
from keel.runtime.metrics import ClientObserver, client_metrics
from keel.runtime.spec import MethodSpec, RequestT, ResponseT, ServiceSpec

Metadata: TypeAlias = Sequence[tuple[str, str | bytes]]
"""Call metadata: (key, value) pairs; keys ending in `-bin` carry bytes."""


class _Call(NamedTuple):
    timeout: float
    metadata: list[tuple[str, str | bytes]]
    observer: ClientObserver


class _CallScope:
    """One call's scope (`async with`): a class rather than a generator, because a call's Python
    time counts several times over in a loaded process."""

    __slots__ = (
        "_began",
        "_breaker",
        "_client",
        "_metadata",
        "_observer",
        "_span",
        "_span_scope",
        "_spec",
        "_timeout",
    )

    def __init__(
        self,
        client: ClientBase,
        spec: MethodSpec[Any, Any],
        timeout: float | None,
        metadata: Metadata | None,
    ) -> None:
        self._client = client
        self._spec = spec
        self._timeout = timeout
        self._metadata = metadata
        self._observer = client._observer(spec)
        self._began = 0.0
        self._span_scope: Any = None
        self._span: Any = None
        self._breaker: AsyncCircuitBreaker | None = None

    async def __aenter__(self) -> _Call:
        client, spec = self._client, self._spec
        self._began = self._observer.started()
        outbound = propagation.outbound_metadata(self._metadata)
        tracer = tracing.tracer()
        if tracer is not None:
            self._span_scope = tracing.client_span(tracer, spec.path, outbound)
            self._span = self._span_scope.__enter__()
        try:
            call = _Call(client._timeout(spec, self._timeout), outbound, self._observer)
            breaker = client._breaker or await client._circuit()
            if not circuit.closed(breaker):  # a closed circuit has nothing to do on entry
                await circuit.enter(breaker, client._target)
            self._breaker = breaker
        except BaseException as error:
            await self.__aexit__(type(error), error, error.__traceback__)
            raise
        return call

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        code = grpc.StatusCode.OK
        typed: KeelError | None = None
        if isinstance(exc, KeelError):
            code = exc.code()
        elif isinstance(exc, grpc.aio.AioRpcError):
            code = exc.code()
            typed = from_rpc_error(exc)  # (the breaker's own too)
        elif exc is not None:
            code = grpc.StatusCode.CANCELLED
        try:
            breaker = self._breaker
            if breaker is not None and (exc is not None or circuit.counting(breaker)):
                await breaker.__aexit__(exc_type, exc, tb)
        finally:
            if self._span_scope is not None:
                tracing.finish(self._span, code)
                self._span_scope.__exit__(exc_type, exc, tb)
            self._observer.finished(self._began, code)
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
        self._callables: dict[str, Any] = {}
        self._breaker: AsyncCircuitBreaker | None = None
        self._observers: dict[str, ClientObserver] = {}

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

    def _timeout(self, spec: MethodSpec[Any, Any], timeout: float | None) -> float:
        """The call's deadline in seconds from now (raises DEADLINE_EXCEEDED if none is left)."""
        chosen = timeout
        if chosen is None:
            chosen = spec.timeout
        if chosen is None:
            service = getattr(self, "__keel_service__", None)
            if service is not None and service.name == spec.service:
                chosen = service.default_timeout
        if chosen is None:
            chosen = self._settings.default_timeout
        remaining = propagation.remaining()
        if remaining is None:
            return chosen
        if remaining <= 0:
            raise DeadlineExceeded(f"{spec.path}: the inbound call's deadline has passed")
        return min(chosen, remaining)

    def _callable(self, spec: MethodSpec[Any, Any]) -> Any:
        multi = self._callables.get(spec.path)
        if multi is None:
            factory = getattr(self._channel, spec.kind.value)
            multi = factory(
                spec.path,
                request_serializer=spec.request_type.SerializeToString,
                response_deserializer=spec.response_type.FromString,
                _registered_method=True,
            )
            self._callables[spec.path] = multi
        return multi

    def _observer(self, spec: MethodSpec[Any, Any]) -> ClientObserver:
        observer = self._observers.get(spec.path)
        if observer is None:
            observer = ClientObserver(spec, client_metrics())
            self._observers[spec.path] = observer
        return observer

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
        return _CallScope(self, spec, timeout, metadata)

    async def _unary(
        self, spec: MethodSpec[Any, Any], request: Any, timeout: float | None, metadata: Any
    ) -> Any:
        async with self._call(spec, timeout, metadata) as call:
            response = await self._callable(spec)(
                request, timeout=call.timeout, metadata=call.metadata
            )
            call.observer.received()
            return response

    async def _stream(
        self, spec: MethodSpec[Any, Any], request: Any, timeout: float | None, metadata: Any
    ) -> AsyncIterator[Any]:
        async with self._call(spec, timeout, metadata) as call:
            responses = self._callable(spec)(request, timeout=call.timeout, metadata=call.metadata)
            async for response in responses:
                call.observer.received()
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
