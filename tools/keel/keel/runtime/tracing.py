"""OpenTelemetry traces for servers and clients.

With `KEEL_OTLP_ENDPOINT` set, `keel.serve` exports spans over OTLP/gRPC. Keel's own handler
and client wrappers make the spans (no gRPC interceptors: those cost more than the call here),
named and attributed by OpenTelemetry's RPC semantic conventions (`rpc.system=grpc`,
`rpc.service`, `rpc.method`, `rpc.grpc.status_code`), with W3C trace context carried in the
metadata, so one trace follows a request from client to server to every downstream server.
Without an endpoint (and no `use(provider)`), nothing is traced and it costs nothing.
"""

from __future__ import annotations

import functools
import math
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

import grpc
import token_bucket
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

_provider: Any = None
_tracer: trace.Tracer | None = None


def use(provider: Any) -> None:
    """Trace servers and clients created from now on with `provider` (None: stop tracing)."""
    global _provider, _tracer, _spans  # noqa: PLW0603 (one tracer provider per process, as in OpenTelemetry)
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer("keel")
    _spans = None if _tracer is None else _SampledSpans.of(_tracer)


def enabled() -> bool:
    """Whether new servers and clients are traced."""
    return _tracer is not None


def tracer() -> trace.Tracer | None:
    """The tracer servers and clients made now use (None: tracing is off)."""
    return _tracer


_CHOSEN = otel_context.create_key("keel.sampled-here")
_dropped: ContextVar[bool] = ContextVar("keel_trace_dropped", default=False)
"""Whether the call being handled started a new trace that is not sampled."""


class _NewTraces:
    """Which new traces are recorded: `ratio` of them, at most `per_second` a second in this
    process (0: no limit), so tracing's cost stays bounded however many calls come in."""

    _KEY = "new-traces"

    def __init__(self, ratio: float, per_second: float) -> None:
        self.ratio = ratio
        self._limiter = (
            token_bucket.Limiter(
                per_second, max(1, math.ceil(per_second)), token_bucket.MemoryStorage()
            )
            if per_second > 0
            else None
        )

    def choose(self) -> bool:
        """Whether the trace starting now is recorded (a token is taken for it if so)."""
        return random.random() < self.ratio and self.admit()

    def admit(self) -> bool:
        """Whether a trace the ratio chose may be recorded: a token is left this second."""
        return self._limiter is None or self._limiter.consume(self._KEY)


class _ChosenOrRatio(TraceIdRatioBased):
    """TraceIdRatioBased within the new traces' limit, except that a trace a server already
    chose to sample is sampled."""

    def __init__(self, new_traces: _NewTraces) -> None:
        super().__init__(new_traces.ratio)
        self.new_traces = new_traces

    def should_sample(  # noqa: PLR0917 (the Sampler interface)
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if parent_context is not None and parent_context.get(_CHOSEN) is True:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        if _dropped.get():
            return SamplingResult(Decision.DROP)
        result = super().should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is Decision.RECORD_AND_SAMPLE and not self.new_traces.admit():
            return SamplingResult(Decision.DROP, None, result.trace_state)
        return result


class KeelSampler(ParentBased):
    """Keel's sampling: a call whose caller sent a sampled trace context is always traced (so a
    trace is whole or absent), and of the traces that start here, `ratio` are, at most
    `per_second` a second in this process (0: no limit).

    A server decides a new trace itself before asking the SDK, so a call it does not sample
    costs no span at all (see `start_server_span`).
    """

    def __init__(self, ratio: float, per_second: float = 0.0) -> None:
        self.new_traces = _NewTraces(ratio, per_second)
        super().__init__(_ChosenOrRatio(self.new_traces))


def sampler(ratio: float, per_second: float = 0.0) -> Sampler:
    """Keel's sampler for `ratio` of new traces, at most `per_second` a second (0: no limit)."""
    return KeelSampler(ratio, per_second)


def configure(
    endpoint: str, service_name: str, sample_ratio: float = 1.0, per_second: float = 0.0
) -> None:
    """Export spans to the OTLP/gRPC collector at `endpoint` (host:port or URL).

    Sampling is `sampler(sample_ratio, per_second)`, unless OTEL_TRACES_SAMPLER chooses another.
    """
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    chosen = None if os.environ.get("OTEL_TRACES_SAMPLER") else sampler(sample_ratio, per_second)
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), sampler=chosen
    )
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    use(provider)


def shutdown() -> None:
    """Flush and stop the exporter, if any."""
    if _provider is not None:
        _provider.shutdown()


@functools.cache
def _attributes(path: str) -> dict[str, str]:
    """The span attributes of a method (made once per method; the SDK copies them)."""
    service, _, method = path[1:].partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


@functools.cache
def _server_attributes(path: str) -> dict[str, Any]:
    """A server span's attributes at its start: the method's, and the status of a call that
    succeeds (`end_server_span` sets another status; one attribute set at the end costs a
    span about a tenth again)."""
    return {**_attributes(path), "rpc.grpc.status_code": grpc.StatusCode.OK.value[0]}


_CARRIED = frozenset({"traceparent", "tracestate", "baggage"})


_CHOSEN_CONTEXT = otel_context.set_value(_CHOSEN, True, otel_context.Context())


def _new_trace_choice(tracer: trace.Tracer) -> bool | None:
    """Whether a trace starting here is sampled, if Keel's sampler decides (None: ask the SDK)."""
    chooser = getattr(tracer, "sampler", None)
    if type(chooser) is not KeelSampler:
        return None
    return chooser.new_traces.choose()


_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_SAMPLED_RANDOM = trace.TraceFlags(trace.TraceFlags.SAMPLED | trace.TraceFlags.RANDOM_TRACE_ID)
_UNSET = Status(StatusCode.UNSET)
_OWN_ATTRIBUTES = 8
"""A span limit Keel's own server attributes fit in (4 of them), with room to spare."""
_SPAN_FIELDS = frozenset(
    {
        "_name",
        "_context",
        "_parent",
        "_attributes",
        "_events",
        "_links",
        "_lock",
        "_record_end_metrics",
    }
)
"""The fields `_SampledSpans.start` sets per span (the rest are the same for every span)."""


class _MadeSpan(sdk_trace.Span):
    """An SDK span whose fields `_SampledSpans` sets in one step (see there)."""

    def __init__(self) -> None:  # (made by _SampledSpans.start, never by this)
        raise TypeError("_MadeSpan is made by _SampledSpans")


class _SampledSpans:
    """Makes the SDK's SERVER span for a call Keel's sampler records: the object, fields and
    span processor calls `Tracer.start_span` makes, without what that costs per span and Keel
    has already done (asking the sampler, validating Keel's own attributes one by one): a span
    costs about half as much. Used only where it gives the same span: the SDK's own Tracer
    with Keel's sampler, and span limits Keel's attributes fit in (`of`)."""

    def __init__(self, tracer: sdk_trace.Tracer) -> None:
        self._tracer = tracer
        self._ids = tracer.id_generator
        self._random_ids = tracer.id_generator.is_trace_id_random()
        self._processor = tracer.span_processor
        self._limits = tracer._span_limits
        self._metrics = tracer._tracer_metrics
        self._fields: dict[str, Any] = {
            "_kind": SpanKind.SERVER,
            "_instrumentation_info": tracer.instrumentation_info,
            "_instrumentation_scope": tracer._instrumentation_scope,
            "_start_time": None,
            "_end_time": None,
            "_resource": tracer.resource,
            "_status": _UNSET,
            "_sampler": tracer.sampler,
            "_trace_config": None,
            "_record_exception": True,
            "_set_status_on_exception": True,
            "_span_processor": tracer.span_processor,
            "_limits": self._limits,
        }

    @classmethod
    def of(cls, tracer: Any) -> _SampledSpans | None:
        """The maker for `tracer`, None where only the SDK's own path gives the same span."""
        if type(tracer) is not sdk_trace.Tracer or type(tracer.sampler) is not KeelSampler:
            return None
        limits = tracer._span_limits
        if limits.max_span_attribute_length is not None:
            return None  # (Keel's values would be cut to it)
        if limits.max_span_attributes is not None and limits.max_span_attributes < _OWN_ATTRIBUTES:
            return None
        spare = cls(tracer)
        # The fields a span of this SDK version has: a version that adds one gets its own path.
        probe = sdk_trace._Span("keel.probe", trace.INVALID_SPAN_CONTEXT, resource=tracer.resource)
        made = {*spare._fields, *_SPAN_FIELDS}
        if set(vars(probe)) != made:
            return None
        return spare

    def start(
        self,
        name: str,
        parent: trace.SpanContext | None,
        attributes: dict[str, Any],
        parent_context: otel_context.Context | None,
    ) -> trace.Span | None:
        """A started, recording SERVER span: a child of `parent` (a sampled remote span), or
        the root of a new trace; `parent_context` is what span processors are told. None while
        the tracer is switched off (the SDK makes the span then)."""
        if not self._tracer._is_enabled():
            return None
        if parent is None:
            trace_id = self._ids.generate_trace_id()
            random_id = self._random_ids
            state = None
        else:
            trace_id = parent.trace_id
            random_id = parent.trace_flags.random_trace_id
            state = parent.trace_state
        context = trace.SpanContext(
            trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=_SAMPLED_RANDOM if random_id else _SAMPLED,
            trace_state=state,
        )
        limits = self._limits
        span_attributes = BoundedAttributes(
            limits.max_span_attributes, None, immutable=False, max_value_len=None
        )
        span_attributes._dict.update(attributes)
        span: _MadeSpan = object.__new__(_MadeSpan)
        span.__dict__.update(
            self._fields,
            _name=name,
            _context=context,
            _parent=parent,
            _attributes=span_attributes,
            _events=BoundedList(limits.max_events),
            _links=BoundedList(limits.max_links),
            _lock=threading.Lock(),
            _record_end_metrics=self._metrics.start_span(parent, Decision.RECORD_AND_SAMPLE),
        )
        span._start_time = time.time_ns()  # (Span.start, without a lock no one else can hold)
        self._processor.on_start(span, parent_context=parent_context)
        return span


_spans: _SampledSpans | None = None


ServerSpan = tuple[trace.Span, object]
"""A server call's span and the token that made it current."""


def start_server_span(
    tracer: trace.Tracer, path: str, metadata: Iterable[tuple[str, Any]]
) -> ServerSpan | None:
    """Start the SERVER span for the call at `path` and make it current: a child of the
    caller's span if it sent one (W3C trace context in the metadata), else a new trace.

    None for a new trace Keel's sampler drops: no span is made at all, and every span started
    while the call is handled is dropped with it (so the calls it makes carry an unsampled
    trace context, and downstream servers drop theirs too). End with `end_server_span`.
    """
    carrier: dict[str, str] | None = None
    for key, value in metadata:  # (a loop: most calls carry none, and then no dict is made)
        if key in _CARRIED and isinstance(value, str):
            if carrier is None:
                carrier = {}
            carrier[key] = value
    if carrier is None:
        chosen = _new_trace_choice(tracer)
        if chosen is False:  # most new traces: no span, and nothing more to do
            _dropped.set(True)  # the call runs in its own task: this ends with it
            return None
        return _start_span(tracer, path[1:], {}, _server_attributes(path), chosen)
    return _start_span(tracer, path[1:], carrier, _server_attributes(path), None)


def start_edge_span(
    tracer: trace.Tracer, name: str, headers: Mapping[str, str], attributes: dict[str, Any]
) -> ServerSpan | None:
    """Start the SERVER span of a request at the edge (the REST gateway), made current: a child
    of the span in the request's `traceparent` header, else a new trace sampled as a server's.
    End it with `end_span`."""
    carrier = {k: v for k, v in headers.items() if k in _CARRIED}
    chosen = None if carrier else _new_trace_choice(tracer)
    if chosen is False:
        _dropped.set(True)
        return None
    return _start_span(tracer, name, carrier, attributes, chosen)


def _start_span(
    tracer: trace.Tracer,
    name: str,
    carrier: dict[str, str],
    attributes: dict[str, Any],
    chosen: bool | None,
) -> ServerSpan:
    """A SERVER span, made current: a child of the caller's (`carrier`), else of a trace Keel
    chose to sample (`chosen`), else as the SDK's sampler decides."""
    parent = propagate.extract(carrier) if carrier else None
    span: trace.Span | None = None
    spans = _spans
    if spans is not None and tracer is _tracer:  # the same span, made for less (_SampledSpans)
        if chosen:
            span = spans.start(name, None, attributes, _CHOSEN_CONTEXT)
        elif parent is not None:
            remote = trace.get_current_span(parent).get_span_context()
            if remote.is_valid and remote.trace_flags.sampled:
                span = spans.start(name, remote, attributes, parent)
    if span is None:
        span = tracer.start_span(
            name,
            context=_CHOSEN_CONTEXT if chosen else parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
    return span, otel_context.attach(trace.set_span_in_context(span, parent))


def end_span(started: ServerSpan) -> None:
    """End a span from `start_edge_span` and restore the context before it."""
    span, token = started
    otel_context.detach(cast("Any", token))
    span.end()


def end_server_span(started: ServerSpan, code: grpc.StatusCode) -> None:
    """Record the call's status on its span, end it, and restore the context before it."""
    if code is not grpc.StatusCode.OK:  # (the span started with OK's)
        finish(started[0], code)
    end_span(started)


@contextmanager
def client_span(
    tracer: trace.Tracer, path: str, metadata: list[tuple[str, str | bytes]]
) -> Iterator[trace.Span]:
    """A CLIENT span for a call to `path`; its context is added to `metadata`."""
    with tracer.start_as_current_span(
        path[1:],
        kind=SpanKind.CLIENT,
        attributes=_attributes(path),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        metadata.extend(carrier.items())
        yield span


def finish(span: trace.Span, code: grpc.StatusCode) -> None:
    """Record the call's status on its span (errors per the RPC semantic conventions)."""
    if not span.is_recording():
        return
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))
