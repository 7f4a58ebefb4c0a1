"""Turning service implementations into grpc.aio method handlers.

Every call gets a correlation id; `keel.errors` become statuses with google.rpc details; an
unexpected exception becomes INTERNAL with the correlation id (the traceback goes to the log,
never to the caller); request bytes that do not decode become INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
from grpc_status import rpc_status

from keel.errors import InvalidArgument, KeelError
from keel.runtime import correlation
from keel.runtime.context import Context
from keel.runtime.logs import get_logger
from keel.runtime.service import ServiceBase
from keel.runtime.spec import MethodSpec, RpcKind

Behaviour = Callable[..., Any]
_log = get_logger("keel.server")


class Undecodable:
    """What the deserializer hands on for request bytes that are not a valid message."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _deserializer(spec: MethodSpec[Any, Any]) -> Callable[[bytes], Any]:
    parse = spec.request_type.FromString

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as error:
            return Undecodable(f"{error}")

    return deserialize


def _undecodable_error(spec: MethodSpec[Any, Any], request: Undecodable) -> KeelError:
    name = spec.request_type.DESCRIPTOR.full_name
    return InvalidArgument(
        f"request is not a valid {name} message: {request.reason}",
        reason="UNDECODABLE_REQUEST",
        domain="keel",
    )


async def _end_call(context: Context, spec: MethodSpec[Any, Any], error: Exception) -> None:
    """Abort the call for `error` (never returns)."""
    if isinstance(error, KeelError):
        status = rpc_status.to_status(error.to_status())
        await context.abort(status.code, status.details, status.trailing_metadata)
    _log.error(
        "unhandled exception in handler",
        method=spec.path,
        exc_info=error,
    )
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error (correlation id {correlation.current()})",
    )


def _start(context: Context) -> None:
    correlation.bind(correlation.from_metadata(context.invocation_metadata()))


async def _checked(spec: MethodSpec[Any, Any], requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            raise _undecodable_error(spec, request)
        yield request


def _unary_response(spec: MethodSpec[Any, Any], method: Behaviour) -> Behaviour:
    streaming = spec.kind.client_streaming

    async def behaviour(request: Any, context: Context) -> Any:
        _start(context)
        try:
            if streaming:
                request = _checked(spec, request)
            elif isinstance(request, Undecodable):
                raise _undecodable_error(spec, request)
            return await method(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _end_call(context, spec, error)

    return behaviour


def _stream_response(spec: MethodSpec[Any, Any], method: Behaviour) -> Behaviour:
    streaming = spec.kind.client_streaming

    async def behaviour(request: Any, context: Context) -> AsyncIterator[Any]:
        _start(context)
        try:
            if streaming:
                request = _checked(spec, request)
            elif isinstance(request, Undecodable):
                raise _undecodable_error(spec, request)
            async for response in method(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _end_call(context, spec, error)

    return behaviour


_FACTORIES: dict[RpcKind, tuple[Callable[..., grpc.RpcMethodHandler[Any, Any]], Any]] = {
    RpcKind.UNARY_UNARY: (grpc.unary_unary_rpc_method_handler, _unary_response),
    RpcKind.UNARY_STREAM: (grpc.unary_stream_rpc_method_handler, _stream_response),
    RpcKind.STREAM_UNARY: (grpc.stream_unary_rpc_method_handler, _unary_response),
    RpcKind.STREAM_STREAM: (grpc.stream_stream_rpc_method_handler, _stream_response),
}


def _handler(impl: ServiceBase, spec: MethodSpec[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    make_handler, wrap = _FACTORIES[spec.kind]
    return make_handler(
        wrap(spec, getattr(impl, spec.python_name)),
        request_deserializer=_deserializer(spec),
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
