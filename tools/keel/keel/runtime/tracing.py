"""OpenTelemetry traces for servers and clients (opentelemetry-instrumentation-grpc).

With `KEEL_OTLP_ENDPOINT` set, `keel.serve` exports spans over OTLP/gRPC; servers and clients
made afterwards carry the instrumentation's interceptors, so one trace follows a request from
client to server to every downstream server (W3C `traceparent` in the metadata). Without an
endpoint (and no `use(provider)`), no interceptor is installed and tracing costs nothing.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

_provider: TracerProvider | None = None


def use(provider: TracerProvider | None) -> None:
    """Trace servers and clients created from now on with `provider` (None: stop tracing)."""
    global _provider  # noqa: PLW0603 (one tracer provider per process, like OpenTelemetry's own)
    _provider = provider


def enabled() -> bool:
    """Whether new servers and clients are traced."""
    return _provider is not None


def configure(endpoint: str, service_name: str) -> None:
    """Export spans to the OTLP/gRPC collector at `endpoint` (host:port or URL)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
    )
    use(provider)


def shutdown() -> None:
    """Flush and stop the exporter, if any."""
    if _provider is not None:
        _provider.shutdown()


def server_interceptors() -> list[Any]:
    """The interceptors a grpc.aio server needs for tracing (none when tracing is off)."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor  # noqa: PLC0415

    return [aio_server_interceptor(tracer_provider=_provider)]  # type: ignore[no-untyped-call]


def client_interceptors() -> list[Any]:
    """The interceptors a grpc.aio channel needs for tracing (none when tracing is off)."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors  # noqa: PLC0415

    return list(aio_client_interceptors(tracer_provider=_provider))  # type: ignore[no-untyped-call]
