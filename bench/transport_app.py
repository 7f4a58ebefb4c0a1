"""The echo and probe services on connectrpc, as one ASGI app: `transport_app:app`
(`transport_app:pyvoy_app` for pyvoy, see shield_receive).

bench/transport_bench.py serves it with hypercorn, granian, pyvoy and uvicorn (PYTHONPATH holds
bench/ and the generated code). Next to EchoService and ProbeService it serves gRPC reflection
(connectrpc-grpcreflect) and grpc.health.v1.Health (connectrpc ships none: this one is written
here on connectrpc's generic endpoints, the way Keel would have to).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from connectrpc_grpcreflect import (  # type: ignore[import-untyped]
    ServerReflectionAlphaASGIApplication,
    ServerReflectionAlphaService,
    ServerReflectionASGIApplication,
    ServerReflectionService,
)
from echo.v1 import echo_connect, echo_pb2, probe_connect
from echo.v1.probe_pb2 import ProbeRequest as Probe
from echo.v1.probe_pb2 import ProbeResponse as Reply
from google.protobuf import descriptor_pool
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from protobuf import DescFile
from protobuf._file_registry import create_file_registry
from protobuf.wkt import Any as AnyPb
from protobuf.wkt.google.protobuf.descriptor_pb import FileDescriptorProto

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def _any(message: Message) -> AnyPb:
    """A google.protobuf message packed in protobuf-py's Any (connectrpc's error details)."""
    name = message.DESCRIPTOR.full_name
    return AnyPb(type_url=f"type.googleapis.com/{name}", value=message.SerializeToString())


class Echo:
    async def echo(
        self,
        request: echo_pb2.EchoRequest,
        ctx: RequestContext[echo_pb2.EchoRequest, echo_pb2.EchoResponse],
    ) -> echo_pb2.EchoResponse:
        return echo_pb2.EchoResponse(text=request.text)


class ProbeService:
    async def probe(self, request: Probe, ctx: RequestContext[Probe, Reply]) -> Reply:
        tag = ctx.request_headers.get("x-probe", "")
        ctx.response_trailers["x-probe-trailer"] = tag
        if request.delay_ms:
            await asyncio.sleep(request.delay_ms / 1000)
        if request.fail:
            attempt = ctx.request_headers.get("grpc-previous-rpc-attempts", "0")
            raise ConnectError(
                Code.FAILED_PRECONDITION,
                f"probe failed (attempt {attempt})",
                details=[ErrorDetail(_any(error_details_pb2.ErrorInfo(reason="PROBE")))],
            )
        ctx.response_headers["x-probe-header"] = tag  # as grpcio: none on a failed call
        return Reply(text=request.text)

    async def fan(self, request: Probe, ctx: RequestContext[Probe, Reply]) -> AsyncIterator[Reply]:
        for number in range(request.count):
            yield Reply(text=f"{request.text}{number}")

    async def gather(
        self, requests: AsyncIterator[Probe], ctx: RequestContext[Probe, Reply]
    ) -> Reply:
        return Reply(text=",".join([r.text async for r in requests]))

    async def chat(
        self, requests: AsyncIterator[Probe], ctx: RequestContext[Probe, Reply]
    ) -> AsyncIterator[Reply]:
        async for request in requests:
            yield Reply(text=request.text.upper())


class Health:
    """grpc.health.v1.Health: Check answers SERVING for the server and each service."""

    def __init__(self, services: set[str]) -> None:
        self.services = services | {""}

    async def check(
        self,
        request: health_pb2.HealthCheckRequest,
        ctx: RequestContext[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse],
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self.services:
            raise ConnectError(Code.NOT_FOUND, f"unknown service {request.service}")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def watch(
        self,
        request: health_pb2.HealthCheckRequest,
        ctx: RequestContext[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse],
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        yield await self.check(request, ctx)
        await asyncio.Event().wait()  # until the caller goes away


class HealthApp(ConnectASGIApplication[Health]):
    @property
    def path(self) -> str:
        return "/grpc.health.v1.Health"


def health_app(services: set[str]) -> HealthApp:
    name = "grpc.health.v1.Health"
    request, response = health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse

    def info(method: str, stream: StreamType) -> MethodInfo[Any, Any]:
        return MethodInfo(
            name=method,
            service_name=name,
            input=request,
            output=response,
            idempotency_level=IdempotencyLevel.UNKNOWN,
            stream_type=stream,
        )

    return HealthApp(
        service=Health(services),
        endpoints=lambda svc: {
            f"/{name}/Check": Endpoint.unary(
                method=info("Check", StreamType.UNARY), function=svc.check
            ),
            f"/{name}/Watch": Endpoint.server_stream(
                method=info("Watch", StreamType.SERVER_STREAM), function=svc.watch
            ),
        },
        codecs=echo_connect._DEFAULT_CODECS,
    )


def _desc_file(name: str) -> DescFile:
    """protobuf-py's descriptor of a file google.protobuf knows (connectrpc-grpcreflect uses it)."""
    pool = descriptor_pool.Default()

    def proto(path: str) -> FileDescriptorProto:
        return FileDescriptorProto.from_binary(pool.FindFileByName(path).serialized_pb)

    found = create_file_registry(proto(name), proto).file(name)
    assert found is not None, name
    return found


def build() -> ASGIApp:
    """One ASGI app routing each service's path prefix to its connectrpc application."""
    services = {"echo.v1.EchoService", "echo.v1.ProbeService"}
    files = [_desc_file("echo/v1/echo.proto"), _desc_file("echo/v1/probe.proto")]
    apps: dict[str, Any] = {
        "echo.v1.EchoService": echo_connect.EchoServiceASGIApplication(Echo()),
        "echo.v1.ProbeService": probe_connect.ProbeServiceASGIApplication(ProbeService()),
        "grpc.health.v1.Health": health_app(services),
        "grpc.reflection.v1.ServerReflection": ServerReflectionASGIApplication(
            ServerReflectionService(*files)
        ),
        "grpc.reflection.v1alpha.ServerReflection": ServerReflectionAlphaASGIApplication(
            ServerReflectionAlphaService(*files)
        ),
    }

    async def route(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        target = apps.get(scope["path"].split("/", 2)[1]) if scope["type"] == "http" else None
        if target is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await target(scope, receive, send)

    return route


def shield_receive(inner: ASGIApp) -> ASGIApp:
    """`inner` with each receive() shielded from cancellation (the workaround pyvoy needs).

    connectrpc watches receive() for a disconnect while a gRPC-protocol call runs and cancels
    that receive() when the call ends; pyvoy 1.3 then sets a result on the cancelled future
    (InvalidStateError) and stops serving after 160 such calls. Shielded, pyvoy's future is
    never cancelled.
    """

    async def shielded(scope: Scope, receive: Any, send: Any) -> None:
        async def receive_shielded() -> Any:
            return await asyncio.shield(receive())

        await inner(scope, receive_shielded if scope["type"] == "http" else receive, send)

    return shielded


app = build()
pyvoy_app = shield_receive(app)
