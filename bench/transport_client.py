"""One client's cost: `python transport_client.py CLIENT PORT GEN_DIR CALLS CONCURRENCY`.

CLIENT: grpcio (grpc.aio stub), connect-grpc (connectrpc's client, gRPC protocol over h2c) or
connect (connectrpc's client, Connect protocol, binary, over h2c; connect-h1 over HTTP/1.1).
Makes CALLS unary echo calls from CONCURRENCY tasks on uvloop and prints one JSON line: calls,
failures, wall seconds, this process's CPU seconds (every thread: grpcio's and pyqwest's
runtimes included) and p50/p99 latency in ms.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, sys.argv[3])

import grpc.aio
import uvloop
from echo.v1 import echo_connect, echo_pb2, echo_pb2_grpc

GIVE_UP = 20
"""Failures after which the run stops (a stalled transport would otherwise take minutes)."""
TIMEOUT_S = 3
Call = Callable[[echo_pb2.EchoRequest], Awaitable[echo_pb2.EchoResponse]]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _drive(call: Call, calls: int, concurrency: int) -> dict[str, Any]:
    request = echo_pb2.EchoRequest(text="hello, keel")
    for _ in range(20):  # connections, caches and code paths warm before measuring
        try:
            await call(request)
        except Exception as error:  # the transport fails: reported
            return {"calls": 0, "failures": 1, "error": f"{type(error).__name__}: {error}"[:300]}
    latencies: list[float] = []
    errors: list[str] = []
    failures = 0
    remaining = calls

    async def worker() -> None:
        nonlocal remaining, failures
        while remaining > 0:
            remaining -= 1
            began = time.perf_counter()
            try:
                reply = await call(request)
                assert reply.text == request.text
            except Exception as error:  # every failure is counted and reported
                failures += 1
                errors.append(f"{type(error).__name__}: {str(error)[:200]}")
                if failures >= GIVE_UP:
                    return
                continue
            latencies.append((time.perf_counter() - began) * 1000)

    cpu, began = _cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, used = time.perf_counter() - began, _cpu() - cpu
    latencies.sort()
    return {
        "calls": len(latencies),
        "failures": failures,
        "seconds": wall,
        "cpu_s": used,
        "p50_ms": latencies[len(latencies) // 2] if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
        "error": errors[0] if errors else "",
    }


async def main(client: str, port: int, calls: int, concurrency: int) -> dict[str, Any]:
    if client == "grpcio":
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub: Any = echo_pb2_grpc.EchoServiceStub(channel)

            async def grpcio_call(request: echo_pb2.EchoRequest) -> echo_pb2.EchoResponse:
                reply: echo_pb2.EchoResponse = await stub.Echo(request, timeout=TIMEOUT_S)
                return reply

            return await _drive(grpcio_call, calls, concurrency)
    import pyqwest  # noqa: PLC0415
    from connectrpc.protocol import ProtocolType  # noqa: PLC0415

    version = pyqwest.HTTPVersion.HTTP1 if client == "connect-h1" else pyqwest.HTTPVersion.HTTP2
    transport = pyqwest.HTTPTransport(http_version=version, enable_otel=False)
    protocol = ProtocolType.GRPC if client == "connect-grpc" else ProtocolType.CONNECT
    async with echo_connect.EchoServiceClient(
        f"http://127.0.0.1:{port}",
        protocol=protocol,
        http_client=pyqwest.Client(transport),
        send_compression=None,
        accept_compression=(),
        timeout_ms=TIMEOUT_S * 1000,
    ) as connect:
        return await _drive(connect.echo, calls, concurrency)


if __name__ == "__main__":
    name, port_, _, calls_, concurrency_ = sys.argv[1:6]
    result = uvloop.run(main(name, int(port_), int(calls_), int(concurrency_)))
    print(json.dumps(result), flush=True)
