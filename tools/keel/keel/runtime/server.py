"""Turning service implementations into grpc.aio method handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from keel.errors import KeelError
from keel.runtime.context import Context
from keel.runtime.service import ServiceBase
from keel.runtime.spec import MethodSpec, RpcKind

Handler = Callable[..., Any]


def _unary_response(method: Handler) -> Handler:
    async def behaviour(request: Any, context: Context) -> Any:
        try:
            return await method(request, context)
        except KeelError as error:
            await context.abort(error.code, error.message)

    return behaviour


def _stream_response(method: Handler) -> Handler:
    async def behaviour(request: Any, context: Context) -> AsyncIterator[Any]:
        try:
            async for response in method(request, context):
                yield response
        except KeelError as error:
            await context.abort(error.code, error.message)

    return behaviour


_FACTORIES: dict[RpcKind, tuple[Callable[..., grpc.RpcMethodHandler[Any, Any]], Handler]] = {
    RpcKind.UNARY_UNARY: (grpc.unary_unary_rpc_method_handler, _unary_response),
    RpcKind.UNARY_STREAM: (grpc.unary_stream_rpc_method_handler, _stream_response),
    RpcKind.STREAM_UNARY: (grpc.stream_unary_rpc_method_handler, _unary_response),
    RpcKind.STREAM_STREAM: (grpc.stream_stream_rpc_method_handler, _stream_response),
}


def _handler(impl: ServiceBase, spec: MethodSpec[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    make_handler, wrap = _FACTORIES[spec.kind]
    method: Callable[..., Awaitable[Any]] = getattr(impl, spec.python_name)
    return make_handler(
        wrap(method),
        request_deserializer=spec.request_type.FromString,
        response_serializer=spec.response_type.SerializeToString,
    )


def method_handlers(impl: ServiceBase) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """The grpc method handlers of one implementation, keyed by method name."""
    spec = type(impl).__keel_service__
    return {method.name: _handler(impl, method) for method in spec.methods}


def add_to_server(impl: ServiceBase, server: grpc.aio.Server) -> None:
    """Serve `impl` (an instance of a generated `<Service>Base` subclass) on a grpc.aio server."""
    spec = type(impl).__keel_service__
    server.add_registered_method_handlers(spec.name, method_handlers(impl))
