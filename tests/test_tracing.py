"""One trace spans client → server → downstream server (real servers, in-memory span exporter)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import keel
import pytest
from keel.runtime import tracing
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.servers.kitchen_server import Front, Pantry, kitchen_keel, kitchen_pb2


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)
    provider.shutdown()


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
    client_cook = by_role["/kitchen.v1.KitchenService/Cook", SpanKind.CLIENT]
    server_cook = by_role["/kitchen.v1.KitchenService/Cook", SpanKind.SERVER]
    client_count = by_role["/kitchen.v1.PantryService/Count", SpanKind.CLIENT]
    server_count = by_role["/kitchen.v1.PantryService/Count", SpanKind.SERVER]
    chain = [client_cook, server_cook, client_count, server_count]
    assert len({span.context.trace_id for span in chain}) == 1
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None
        assert child.parent.span_id == parent.context.span_id


async def test_no_tracing_no_interceptors() -> None:
    assert tracing.server_interceptors() == []
    assert tracing.client_interceptors() == []
