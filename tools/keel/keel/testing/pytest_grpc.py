"""Running a Keel service under pytest-grpc's own fixtures (a synchronous grpc.server).

pytest-grpc builds a thread-pool `grpc.server` and calls `grpc_add_to_server(servicer, server)`;
Keel services are asyncio code, so this adapter runs each call on one private event loop:

    @pytest.fixture(scope="module")
    def grpc_add_to_server():
        return keel.testing.pytest_grpc.add_to_server

Only for compatibility: Keel's own fixtures (keel_cluster, keel_client) use a real grpc.aio
server with everything Keel adds (validation, error details, logs, metrics).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc

from keel.errors import KeelError
from keel.runtime.service import ServiceBase
from keel.runtime.spec import MethodSpec, RpcKind

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop  # noqa: PLW0603 (one loop thread for every adapted call)
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="keel-pytest-grpc", daemon=True).start()
        return _loop


class _Context:
    """The parts of keel.Context a handler usually needs, over a sync servicer context."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return self._context.peer()

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    async def abort(self, code: grpc.StatusCode, details: str = "", *_: Any) -> None:
        raise _AbortError(code, details)


class _AbortError(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _run(coroutine: Any, context: grpc.ServicerContext) -> Any:
    try:
        return asyncio.run_coroutine_threadsafe(coroutine, _event_loop()).result()
    except KeelError as error:
        context.abort(error.code(), error.message)
    except _AbortError as error:
        context.abort(error.code, error.details)


async def _aiter(requests: Iterator[Any]) -> AsyncIterator[Any]:
    for request in requests:
        yield request


async def _collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


def _behaviour(method: Callable[..., Any], kind: RpcKind) -> Callable[..., Any]:
    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        if kind.client_streaming:
            request = _aiter(request)
        if kind.server_streaming:
            return iter(_run(_collect(method(request, _Context(context))), context) or ())
        return _run(method(request, _Context(context)), context)

    return unary


def _handler(impl: ServiceBase, spec: MethodSpec[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    factory = {
        RpcKind.UNARY_UNARY: grpc.unary_unary_rpc_method_handler,
        RpcKind.UNARY_STREAM: grpc.unary_stream_rpc_method_handler,
        RpcKind.STREAM_UNARY: grpc.stream_unary_rpc_method_handler,
        RpcKind.STREAM_STREAM: grpc.stream_stream_rpc_method_handler,
    }[spec.kind]
    return factory(
        _behaviour(getattr(impl, spec.python_name), spec.kind),
        request_deserializer=spec.request_type.FromString,
        response_serializer=spec.response_type.SerializeToString,
    )


def add_to_server(impl: ServiceBase, server: grpc.Server) -> None:
    """pytest-grpc's `grpc_add_to_server` for a Keel service implementation."""
    spec = type(impl).__keel_service__
    handlers = {method.name: _handler(impl, method) for method in spec.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(spec.name, handlers),))
