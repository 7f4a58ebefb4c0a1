"""Server interceptors for calls that do not come through the grpc.aio server (REST requests a
service serves itself): the same chain, run per call, so an interceptor that refuses, audits or
wraps a call does so whichever way the call arrived."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio

from keel.errors import Unimplemented
from keel.runtime.handlers import Behaviour


class _Details(grpc.HandlerCallDetails):
    """What an interceptor is told of the call: its path and metadata."""

    def __init__(self, method: str, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self.method = method
        self.invocation_metadata = metadata


async def _chosen(
    interceptors: Sequence[grpc.aio.ServerInterceptor],
    handler: grpc.RpcMethodHandler[Any, Any],
    path: str,
    context: Any,
) -> grpc.RpcMethodHandler[Any, Any]:
    """The handler the interceptors give for this call (each may return its own)."""
    details = _Details(path, tuple(context.invocation_metadata() or ()))

    async def step(index: int, at: grpc.HandlerCallDetails) -> Any:
        if index == len(interceptors):
            return handler
        return await interceptors[index].intercept_service(lambda d: step(index + 1, d), at)

    found = await step(0, details)
    if found is None:
        raise Unimplemented(f"{path} is not served")
    return found  # type: ignore[no-any-return]


def unary(
    interceptors: Sequence[grpc.aio.ServerInterceptor],
    handler: grpc.RpcMethodHandler[Any, Any],
    path: str,
) -> Behaviour:
    """A unary-response behaviour that runs `interceptors` before `handler`'s."""

    async def behaviour(request: Any, context: Any) -> Any:
        chosen = await _chosen(interceptors, handler, path, context)
        method: Any = chosen.unary_unary  # a coroutine function here
        return await method(request, context)

    return behaviour


def streaming(
    interceptors: Sequence[grpc.aio.ServerInterceptor],
    handler: grpc.RpcMethodHandler[Any, Any],
    path: str,
) -> Behaviour:
    """A server-streaming behaviour that runs `interceptors` before `handler`'s."""

    async def behaviour(request: Any, context: Any) -> AsyncIterator[Any]:
        chosen = await _chosen(interceptors, handler, path, context)
        stream: Any = chosen.unary_stream  # an async generator function here
        async for message in stream(request, context):
            yield message

    return behaviour
