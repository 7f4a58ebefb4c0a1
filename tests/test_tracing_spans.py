"""Keel's cheaper server span (tracing._SampledSpans) is the span the SDK's Tracer makes: the same
fields, the same exported data, the same processor calls, and every Span method works on it."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from keel.runtime import tracing
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

PATH = "/kitchen.v1.PantryService/Count"
TRACE_ID, PARENT_ID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


class Seen(SpanProcessor):
    """Keeps what span processors are told, and sets an attribute at start (as baggage
    processors do)."""

    def __init__(self) -> None:
        self.started: list[tuple[Any, Any]] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append((span, parent_context))
        span.set_attribute("seen.at.start", True)

    def on_end(self, span: ReadableSpan) -> None:
        return None


class Traced:
    def __init__(self, limits: SpanLimits | None = None, sampler: Any = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.seen = Seen()
        self.provider = TracerProvider(sampler=sampler or tracing.sampler(1.0), span_limits=limits)
        self.provider.add_span_processor(self.seen)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))


@pytest.fixture
def traced() -> Iterator[Traced]:
    made = Traced()
    tracing.use(made.provider)
    yield made
    tracing.use(None)
    made.provider.shutdown()


def _handled(metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode) -> Any:
    """A server call's span as a handler sees it: started, used by the handler, ended."""

    def call() -> Any:
        tracer = tracing.tracer()
        assert tracer is not None
        started = tracing.start_server_span(tracer, PATH, metadata)
        assert started is not None
        current = trace.get_current_span()
        assert current is started[0]
        current.set_attribute("app.items", [1, 2, 3])
        current.add_event("looked", {"shelf": "top"})
        current.record_exception(ValueError("no bread"))
        current.add_link(trace.SpanContext(int(TRACE_ID, 16), 7, is_remote=True))
        tracing.end_server_span(started, code)
        return type(started[0]), vars(started[0]).keys()

    return contextvars.Context().run(call)


def _exported(span: ReadableSpan) -> dict[str, Any]:
    """What an exporter reads of a span, ids and times aside."""
    return {
        "name": span.name,
        "kind": span.kind,
        "parent": span.parent,
        "attributes": dict(span.attributes or {}),
        "events": [(e.name, dict(e.attributes or {})) for e in span.events],
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "status": (span.status.status_code, span.status.description),
        "resource": span.resource.attributes,
        "scope": span.instrumentation_scope,
        "flags": span.context.trace_flags,
        "state": span.context.trace_state,
        "remote": span.context.is_remote,
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
        "ended": span.end_time is not None and span.start_time is not None,
    }


def _both(traced: Traced, metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode) -> Any:
    """The same call made by Keel's maker and by the SDK's Tracer (the maker switched off)."""
    keel_type, keel_fields = _handled(metadata, code)
    maker, tracing._spans = tracing._spans, None
    try:
        sdk_type, sdk_fields = _handled(metadata, code)
    finally:
        tracing._spans = maker
    ours, theirs = traced.exporter.get_finished_spans()
    return (keel_type, keel_fields, ours), (sdk_type, sdk_fields, theirs)


@pytest.mark.parametrize("code", [grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND])
def test_a_new_trace_gets_the_sdks_span(traced: Traced, code: grpc.StatusCode) -> None:
    assert tracing._spans is not None  # the SDK's Tracer and Keel's sampler: Keel makes it
    (keel_type, keel_fields, ours), (sdk_type, sdk_fields, theirs) = _both(traced, (), code)
    assert keel_type is not sdk_type  # made by each path, as the test means
    assert set(keel_fields) == set(sdk_fields)
    assert _exported(ours) == _exported(theirs)
    assert ours.parent is None
    assert ours.context.trace_id != theirs.context.trace_id
    assert ours.attributes is not None
    assert ours.attributes["app.items"] == (1, 2, 3)  # a user's value is cleaned as the SDK does
    assert ours.attributes["seen.at.start"] is True
    assert ours.attributes["rpc.grpc.status_code"] == code.value[0]
    assert [e.name for e in ours.events] == ["looked", "exception"]


def test_a_sampled_callers_trace_gets_the_sdks_span(traced: Traced) -> None:
    metadata = (
        ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
        ("tracestate", "vendor=opaque"),
    )
    (_, _, ours), (_, _, theirs) = _both(traced, metadata, grpc.StatusCode.OK)
    assert _exported(ours) == _exported(theirs)
    assert ours.parent is not None
    assert ours.parent.span_id == int(PARENT_ID, 16)
    assert ours.context.trace_id == int(TRACE_ID, 16)
    assert ours.context.trace_state.get("vendor") == "opaque"
    # span processors are told the caller's context, as the SDK tells them
    (_, context_a), (_, context_b) = traced.seen.started
    assert trace.get_current_span(context_a).get_span_context().span_id == int(PARENT_ID, 16)
    assert trace.get_current_span(context_b).get_span_context().span_id == int(PARENT_ID, 16)


def test_an_unsampled_caller_gets_no_recorded_span(traced: Traced) -> None:
    def call() -> bool:
        tracer = tracing.tracer()
        assert tracer is not None
        metadata = (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-00"),)
        started = tracing.start_server_span(tracer, PATH, metadata)
        assert started is not None
        recording = started[0].is_recording()
        tracing.end_server_span(started, grpc.StatusCode.OK)
        return recording

    assert contextvars.Context().run(call) is False
    assert traced.exporter.get_finished_spans() == ()


def _made_by_sdk(made: Traced) -> tuple[ReadableSpan, ...]:
    """The spans of one handled call, checking that Keel's maker is not used for `made`."""
    tracing.use(made.provider)
    try:
        assert tracing._spans is None
        _handled((), grpc.StatusCode.OK)
        return made.exporter.get_finished_spans()
    finally:
        tracing.use(None)
        made.provider.shutdown()


def test_span_limits_keels_attributes_do_not_fit_leave_spans_to_the_sdk() -> None:
    (cut,) = _made_by_sdk(Traced(SpanLimits(max_span_attribute_length=3)))
    assert cut.attributes is not None
    assert cut.attributes["rpc.service"] == "kit"  # the SDK's limit, applied
    (few,) = _made_by_sdk(Traced(SpanLimits(max_span_attributes=2)))
    assert few.dropped_attributes > 0


def test_another_sampler_leaves_spans_to_the_sdk() -> None:
    (span,) = _made_by_sdk(Traced(sampler=ParentBased(TraceIdRatioBased(1.0))))
    assert span.kind is trace.SpanKind.SERVER


def test_an_sdk_whose_spans_have_other_fields_gets_its_own_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "_SPAN_FIELDS", tracing._SPAN_FIELDS | {"_new_field"})
    (span,) = _made_by_sdk(Traced())
    assert span.kind is trace.SpanKind.SERVER
