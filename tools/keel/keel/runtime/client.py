"""The base of every generated `<Service>Client` class."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self, TypeAlias

import grpc
import grpc.aio

from keel.runtime.spec import MethodSpec, RequestT, ResponseT, ServiceSpec

Metadata: TypeAlias = Sequence[tuple[str, str | bytes]]
"""Call metadata: (key, value) pairs; keys ending in `-bin` carry bytes."""


class ClientBase:
    """A typed client of one service over a grpc.aio channel.

    `Client(channel)` uses a channel you own; `Client.connect("host:port")` opens one that
    the client closes, either on `await client.close()` or when its `async with` block ends.
    """

    __keel_service__: ClassVar[ServiceSpec]

    def __init__(self, channel: grpc.aio.Channel, *, _owns_channel: bool = False) -> None:
        self._channel = channel
        self._owns_channel = _owns_channel
        self._callables: dict[str, Any] = {}

    @classmethod
    def connect(
        cls,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> Self:
        """A client on a new channel to `target` (`host:port`, `dns:///name:port`, ...)."""
        if credentials is None:
            channel = grpc.aio.insecure_channel(target, options=options)
        else:
            channel = grpc.aio.secure_channel(target, credentials, options=options)
        return cls(channel, _owns_channel=True)

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

    def _timeout(self, spec: MethodSpec[Any, Any], timeout: float | None) -> float | None:
        if timeout is not None:
            return timeout
        if spec.timeout is not None:
            return spec.timeout
        return self.__keel_service__.default_timeout

    def _callable(self, spec: MethodSpec[Any, Any]) -> Any:
        multi = self._callables.get(spec.name)
        if multi is None:
            factory = getattr(self._channel, spec.kind.value)
            multi = factory(
                spec.path,
                request_serializer=spec.request_type.SerializeToString,
                response_deserializer=spec.response_type.FromString,
                _registered_method=True,
            )
            self._callables[spec.name] = multi
        return multi

    async def _unary_unary(
        self,
        spec: MethodSpec[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> ResponseT:
        call = self._callable(spec)(
            request, timeout=self._timeout(spec, timeout), metadata=metadata
        )
        response: ResponseT = await call
        return response

    async def _unary_stream(
        self,
        spec: MethodSpec[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> AsyncIterator[ResponseT]:
        call = self._callable(spec)(
            request, timeout=self._timeout(spec, timeout), metadata=metadata
        )
        async for response in call:
            yield response

    async def _stream_unary(
        self,
        spec: MethodSpec[RequestT, ResponseT],
        requests: AsyncIterable[RequestT],
        *,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> ResponseT:
        call = self._callable(spec)(
            requests, timeout=self._timeout(spec, timeout), metadata=metadata
        )
        response: ResponseT = await call
        return response

    async def _stream_stream(
        self,
        spec: MethodSpec[RequestT, ResponseT],
        requests: AsyncIterable[RequestT],
        *,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> AsyncIterator[ResponseT]:
        call = self._callable(spec)(
            requests, timeout=self._timeout(spec, timeout), metadata=metadata
        )
        async for response in call:
            yield response
