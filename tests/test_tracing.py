"""One trace spans client → server → downstream server (real servers, in-memory span exporter)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import signal
import time
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import keel
import pytest
from keel.runtime import tracing
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import start_kitchen_server
from tests.servers.kitchen_server import Front, Pantry, kitchen_keel, kitchen_pb2


async def test_one_trace_across_two_hops(spans: InMemorySpanExporter) -> None:
    async with keel.Server([Pantry()], port=0, log_calls=False) as pantry:
        front_impl = Front(f"127.0.0.1:{pantry.port}")
        async with (
            keel.Server([front_impl], port=0, log_calls=False) as front,
            kitchen_keel.KitchenServiceClient.connect(f"127.0.0.1:{front.port}") as client,
        ):
            await client.cook(kitchen_pb2.CookRequest())
    finished = spans.get_finished_spans()
    by_role = {(s.name, s.kind): s for s in finished}
    client_cook = by_role["kitchen.v1.KitchenService/Cook", SpanKind.CLIENT]
    server_cook = by_role["kitchen.v1.KitchenService/Cook", SpanKind.SERVER]
    client_count = by_role["kitchen.v1.PantryService/Count", SpanKind.CLIENT]
    server_count = by_role["kitchen.v1.PantryService/Count", SpanKind.SERVER]
    chain = [client_cook, server_cook, client_count, server_count]
    assert len({span.context.trace_id for span in chain}) == 1
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None
        assert child.parent.span_id == parent.context.span_id


async def test_span_attributes_and_error_status(spans: InMemorySpanExporter) -> None:
    async with keel.Server([Pantry()], port=0, log_calls=False) as pantry:
        front_impl = Front(f"127.0.0.1:{pantry.port}")
        front_impl.failures = [keel.errors.NotFound("no dish")]
        async with (
            keel.Server([front_impl], port=0, log_calls=False) as front,
            kitchen_keel.KitchenServiceClient.connect(f"127.0.0.1:{front.port}") as client,
        ):
            with pytest.raises(grpc.aio.AioRpcError):
                await client.cook(kitchen_pb2.CookRequest())
    finished = spans.get_finished_spans()
    assert sorted(span.kind.name for span in finished) == ["CLIENT", "SERVER"]
    for span in finished:
        assert span.attributes is not None
        assert span.attributes["rpc.system"] == "grpc"
        assert span.attributes["rpc.service"] == "kitchen.v1.KitchenService"
        assert span.attributes["rpc.method"] == "Cook"
        assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
        assert span.status.status_code == StatusCode.ERROR


def test_nothing_is_traced_without_a_provider() -> None:
    assert not tracing.enabled()
    assert tracing.tracer() is None


class _Collector:
    """A real OTLP/gRPC trace collector endpoint that keeps what it receives."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (OTLP's name)
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_keel_serve_exports_spans_over_otlp() -> None:
    collector = _Collector()
    otlp = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, otlp)  # type: ignore[no-untyped-call]
    otlp_port = otlp.add_insecure_port("127.0.0.1:0")
    await otlp.start()
    process, port = start_kitchen_server(
        {"KEEL_OTLP_ENDPOINT": f"127.0.0.1:{otlp_port}", "KEEL_TRACE_SAMPLE_RATIO": "1"}
    )
    try:
        async with kitchen_keel.KitchenServiceClient.connect(f"127.0.0.1:{port}") as client:
            await client.cook(kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name="soup")))
        process.send_signal(signal.SIGTERM)  # shutdown flushes the batch of spans
        await asyncio.to_thread(process.communicate, None, 30)
    finally:
        process.kill()
        await otlp.stop(0)
    assert process.returncode == 0
    spans = [
        (resource_spans.resource, span)
        for request in collector.requests
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    names = {span.name for _, span in spans}
    assert "kitchen.v1.KitchenService/Cook" in names
    resource, _ = spans[0]
    service_names = [a.value.string_value for a in resource.attributes if a.key == "service.name"]
    assert service_names == ["kitchen.v1.KitchenService"]


def _raw_count(channel: grpc.aio.Channel) -> Any:
    """PantryService.Count through a plain grpcio channel (no Keel client, no trace context)."""
    return channel.unary_unary(
        "/kitchen.v1.PantryService/Count",
        request_serializer=kitchen_pb2.CountRequest.SerializeToString,
        response_deserializer=kitchen_pb2.CountResponse.FromString,
    )


async def test_sampling_follows_the_caller_and_samples_new_traces_by_ratio() -> None:
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    with _keel_sampled(0.0) as exporter:
        async with (
            keel.Server([Pantry()], port=0, log_calls=False) as pantry,
            grpc.aio.insecure_channel(f"127.0.0.1:{pantry.port}") as channel,
        ):
            count = _raw_count(channel)
            await count(kitchen_pb2.CountRequest(), timeout=5)  # a new trace, ratio 0
            assert exporter.get_finished_spans() == ()
            for flags in ("00", "01"):  # the caller did not, then did, sample its trace
                traceparent = f"00-{trace_id}-{parent_id}-{flags}"
                await count(
                    kitchen_pb2.CountRequest(), timeout=5, metadata=[("traceparent", traceparent)]
                )
    (span,) = exporter.get_finished_spans()
    assert span.context.trace_id == int(trace_id, 16)
    assert span.parent is not None
    assert span.parent.span_id == int(parent_id, 16)


@contextlib.contextmanager
def _keel_sampled(ratio: float, per_second: float = 0.0) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.sampler(ratio, per_second))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


@pytest.mark.parametrize("ratio", [0.0, 1.0])
async def test_a_new_traces_sampling_reaches_every_downstream_server(ratio: float) -> None:
    with _keel_sampled(ratio) as exporter:
        pantry_impl = Pantry()
        async with keel.Server([pantry_impl], port=0, log_calls=False) as pantry:
            front_impl = Front(f"127.0.0.1:{pantry.port}")
            async with (
                keel.Server([front_impl], port=0, log_calls=False) as front,
                grpc.aio.insecure_channel(f"127.0.0.1:{front.port}") as channel,
            ):
                cook = channel.unary_unary(
                    "/kitchen.v1.KitchenService/Cook",
                    request_serializer=kitchen_pb2.CookRequest.SerializeToString,
                    response_deserializer=kitchen_pb2.CookResponse.FromString,
                )
                await cook(kitchen_pb2.CookRequest(), timeout=5)  # no trace context: a new trace
    _, trace_id, _, flags = pantry_impl.seen[0]["traceparent"].split("-")
    assert int(flags, 16) & 1 == int(ratio)  # the front's decision travelled downstream
    finished = exporter.get_finished_spans()
    if ratio == 0.0:
        assert finished == ()
    else:
        assert sorted(span.kind.name for span in finished) == ["CLIENT", "SERVER", "SERVER"]
        assert {f"{span.context.trace_id:032x}" for span in finished} == {trace_id}


async def test_new_traces_are_sampled_at_the_configured_ratio() -> None:
    calls = 400
    with _keel_sampled(0.5) as exporter:
        async with (
            keel.Server([Pantry()], port=0, log_calls=False) as pantry,
            grpc.aio.insecure_channel(f"127.0.0.1:{pantry.port}") as channel,
        ):
            count = _raw_count(channel)
            for _ in range(calls):
                await count(kitchen_pb2.CountRequest(), timeout=5)
        recorded = exporter.get_finished_spans()
    # Binomial(400, 0.5): mean 200, standard deviation 10; the bounds are 6 deviations out.
    assert 140 <= len(recorded) <= 260
    assert len({span.context.trace_id for span in recorded}) == len(recorded)


async def test_new_traces_are_recorded_at_most_so_many_a_second() -> None:
    per_second, calls = 3, 40
    with _keel_sampled(1.0, per_second) as exporter:
        async with (
            keel.Server([Pantry()], port=0, log_calls=False) as pantry,
            grpc.aio.insecure_channel(f"127.0.0.1:{pantry.port}") as channel,
        ):
            count = _raw_count(channel)
            began = time.monotonic()
            for _ in range(calls):  # new traces, every one chosen by the ratio
                await count(kitchen_pb2.CountRequest(), timeout=5)
            elapsed = time.monotonic() - began
            new = len(exporter.get_finished_spans())
            traceparent = f"00-{'ab' * 16}-{'cd' * 8}-01"
            for _ in range(calls):  # a caller's sampled trace: not limited
                await count(
                    kitchen_pb2.CountRequest(), timeout=5, metadata=[("traceparent", traceparent)]
                )
            followed = len(exporter.get_finished_spans()) - new
    # A full bucket of `per_second`, then `per_second` more each second that passed.
    assert per_second <= new <= per_second + math.ceil(per_second * elapsed)
    assert new < calls
    assert followed == calls


def test_the_limit_holds_for_traces_the_sdk_starts() -> None:
    """A root span outside any server call (a script's client call) is decided by the SDK with
    Keel's sampler: the same limit applies."""
    per_second, spans = 2, 30
    with _keel_sampled(1.0, per_second) as exporter:
        tracer = tracing.tracer()
        assert tracer is not None
        began = time.monotonic()
        for _ in range(spans):
            tracer.start_span("script").end()
        elapsed = time.monotonic() - began
        recorded = len(exporter.get_finished_spans())
    assert per_second <= recorded <= per_second + math.ceil(per_second * elapsed)
