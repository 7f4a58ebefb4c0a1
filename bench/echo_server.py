"""An echo server for bench/server_bench.py: `python bench/echo_server.py MODE PORT GEN_DIR`.

MODE: raw (grpc.aio + servicer + health + reflection, on asyncio's loop), raw-uvloop (the same
on uvloop, the loop keel.serve uses), keel (keel.Server, logs + metrics + traces on), keel-off
(all three off), keel-logs / keel-metrics / keel-traces (one of them on), keel-all-sampled and
keel-traces-all-sampled (every call traced, not Keel's default share of new traces),
keel-unlimited (logs + metrics + traces, Keel's share of new traces without its per-second limit),
keel-workers and keel-workers-on (keel.serve with KEEL_WORKERS and the rest of its settings
from the environment). Keel modes run on keel.serve's loop and trace with Keel's sampler.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence

sys.path.insert(0, sys.argv[3])

import grpc.aio
import keel
import uvloop
from echo.v1 import echo_keel, echo_pb2, echo_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from keel.runtime import logs, tracing
from keel.runtime.config import Settings
from keel.runtime.server import run as keel_run
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

PARTS = {
    "keel": {"logs", "metrics", "traces"},
    "keel-off": set(),
    "keel-logs": {"logs"},
    "keel-metrics": {"metrics"},
    "keel-traces": {"traces"},
    "keel-all-sampled": {"logs", "metrics", "traces", "every-trace"},
    "keel-traces-all-sampled": {"traces", "every-trace"},
    "keel-unlimited": {"logs", "metrics", "traces", "no-limit"},
}


class RawEcho(echo_pb2_grpc.EchoServiceServicer):  # type: ignore[misc]
    async def Echo(  # noqa: N802 (grpcio's generated name)
        self, request: echo_pb2.EchoRequest, context: object
    ) -> echo_pb2.EchoResponse:
        return echo_pb2.EchoResponse(text=request.text)


class KeelEcho(echo_keel.EchoServiceBase):  # type: ignore[misc]
    async def echo(
        self, request: echo_pb2.EchoRequest, context: keel.Context
    ) -> echo_pb2.EchoResponse:
        return echo_pb2.EchoResponse(text=request.text)


class DropSpans(SpanExporter):
    """Spans are made and exported in batches, then dropped (no collector here)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def raw(port: int) -> None:
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServiceServicer_to_server(RawEcho(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(("echo.v1.EchoService",), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await _until_signal()
    await server.stop(0)


async def keel_server(port: int, parts: set[str]) -> None:
    if "traces" in parts:
        # As keel.serve configures it: Keel's sampler at the default ratio and limit, or every
        # call, or the default ratio without the limit.
        settings = Settings()
        ratio = 1.0 if "every-trace" in parts else settings.trace_sample_ratio
        limited = not parts & {"every-trace", "no-limit"}
        per_second = settings.trace_rate_limit if limited else 0.0
        provider = TracerProvider(sampler=tracing.sampler(ratio, per_second))
        provider.add_span_processor(BatchSpanProcessor(DropSpans()))
        tracing.use(provider)
    logs.configure("info")
    server = keel.Server(
        [KeelEcho()], port=port, log_calls="logs" in parts, metrics="metrics" in parts
    )
    await server.start()
    await _until_signal()
    await server.stop(0)


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "raw":
        asyncio.run(raw(port))
    elif mode == "raw-uvloop":
        uvloop.run(raw(port))
    elif mode in PARTS:
        keel_run(keel_server(port, PARTS[mode]))
    elif mode in ("keel-workers", "keel-workers-on"):
        print("ready", flush=True)
        keel.serve([KeelEcho()], port=port)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
