"""Echo and probe on grpc.aio (Keel's transport today): `python transport_grpcio.py PORT GEN_DIR`.

The same services as transport_app.py, with grpcio's health and reflection, on uvloop as
keel.serve runs; prints `ready` once serving, stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator

sys.path.insert(0, sys.argv[2])

import grpc.aio
import uvloop
from echo.v1 import echo_pb2, echo_pb2_grpc, probe_pb2_grpc
from echo.v1.probe_pb2 import ProbeRequest, ProbeResponse
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

Context = grpc.aio.ServicerContext[ProbeRequest, ProbeResponse]


class Echo(echo_pb2_grpc.EchoServiceServicer):  # type: ignore[misc]
    async def Echo(  # noqa: N802 (grpcio's generated name)
        self, request: echo_pb2.EchoRequest, context: object
    ) -> echo_pb2.EchoResponse:
        return echo_pb2.EchoResponse(text=request.text)


class ProbeService(probe_pb2_grpc.ProbeServiceServicer):  # type: ignore[misc]
    async def Probe(self, request: ProbeRequest, context: Context) -> ProbeResponse:  # noqa: N802
        metadata = dict(context.invocation_metadata() or ())
        tag = str(metadata.get("x-probe", ""))
        context.set_trailing_metadata((("x-probe-trailer", tag),))
        if request.delay_ms:
            await asyncio.sleep(request.delay_ms / 1000)
        if request.fail:  # before any header: a call that sent headers is never retried
            attempt = str(metadata.get("grpc-previous-rpc-attempts", "0"))
            detail = status_pb2.Status(
                code=code_pb2.FAILED_PRECONDITION, message=f"probe failed (attempt {attempt})"
            )
            detail.details.add().Pack(error_details_pb2.ErrorInfo(reason="PROBE"))
            await context.abort_with_status(rpc_status.to_status(detail))
        await context.send_initial_metadata((("x-probe-header", tag),))
        return ProbeResponse(text=request.text)

    async def Fan(  # noqa: N802
        self, request: ProbeRequest, context: Context
    ) -> AsyncIterator[ProbeResponse]:
        for number in range(request.count):
            yield ProbeResponse(text=f"{request.text}{number}")

    async def Gather(  # noqa: N802
        self, requests: AsyncIterator[ProbeRequest], context: Context
    ) -> ProbeResponse:
        return ProbeResponse(text=",".join([r.text async for r in requests]))

    async def Chat(  # noqa: N802
        self, requests: AsyncIterator[ProbeRequest], context: Context
    ) -> AsyncIterator[ProbeResponse]:
        async for request in requests:
            yield ProbeResponse(text=request.text.upper())


async def serve(port: int) -> None:
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServiceServicer_to_server(Echo(), server)
    probe_pb2_grpc.add_ProbeServiceServicer_to_server(ProbeService(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = ("echo.v1.EchoService", "echo.v1.ProbeService", reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    for name in ("", *names[:2]):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(0)


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
