"""One table of every method a server answers, looked up by path (one generic handler).

grpc.aio (1.85) keeps one pending "next call" request per registered method and, for every call
it accepts, waits on all of them with `asyncio.wait` (grpc/grpc#43461): Python on the event loop
that grows with the registered methods. A Keel server's methods, health and reflection are
served through this table, added as the server's one generic handler, so that wait covers one
request however many methods the server has (for the echo server's five, 28,000 instructions a
call fewer: bench/server_instructions.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import grpc

from keel.runtime import propagation

MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class MethodTable(grpc.GenericRpcHandler):
    """Method handlers by path (`/package.Service/Method`).

    It takes handlers as a server does, so grpcio's generated `add_<Service>Servicer_to_server`
    functions (health, reflection) can fill it: their registered handlers go into the table,
    and the generic handlers they also pass are asked only for paths the table lacks.
    """

    def __init__(self, *, keep_metadata: bool = False) -> None:
        """`keep_metadata`: hand each call's metadata, as grpc read it for the lookup, on to the
        call's handler (keel.runtime.propagation.receive), so it is not built again. Only for
        a server without grpc interceptors, which could change what the lookup is told."""
        self._handlers: dict[str, MethodHandler] = {}
        self._generic: list[grpc.GenericRpcHandler] = []
        self._keep_metadata = keep_metadata

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, MethodHandler]
    ) -> None:
        """Add a service's handlers, keyed by method name (as grpc.aio.Server's method)."""
        for method, handler in handlers.items():
            path = f"/{service}/{method}"
            if path in self._handlers:
                raise ValueError(f"{path} is served twice")
            self._handlers[path] = handler

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        """Add handlers asked, in order, for a path the table lacks."""
        self._generic.extend(handlers)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> MethodHandler | None:
        if self._keep_metadata:
            propagation.receive(handler_call_details.invocation_metadata)
        path: str = handler_call_details.method
        found = self._handlers.get(path)
        if found is None:
            for generic in self._generic:
                found = generic.service(handler_call_details)
                if found is not None:
                    break
        return found
