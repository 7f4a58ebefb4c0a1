"""Per-call observation on the server: one log line and go-grpc-prometheus metrics per call.

Metric names and labels follow go-grpc-prometheus, so existing Grafana dashboards work:
`grpc_server_started_total`, `grpc_server_handled_total{grpc_code}`,
`grpc_server_msg_received_total`, `grpc_server_msg_sent_total` and the
`grpc_server_handling_seconds` histogram, each labelled grpc_type, grpc_service, grpc_method.

In one process the server counts in plain Python and a prometheus_client collector reports the
counts when scraped: prometheus_client's own counters cost four Python calls and a lock per
increment, which made metrics a tenth of an echo call. In prometheus_client's multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`, which Keel's workers use) its counters and histogram are used, as
their values must reach the shared folder.
"""

from __future__ import annotations

import itertools
import os
import time
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from keel.runtime import correlation, tracing
from keel.runtime.logs import HotLogger
from keel.runtime.spec import MethodSpec, RpcKind

GRPC_TYPE = {
    RpcKind.UNARY_UNARY: "unary",
    RpcKind.UNARY_STREAM: "server_stream",
    RpcKind.STREAM_UNARY: "client_stream",
    RpcKind.STREAM_STREAM: "bidi_stream",
}
_LABELS = ("grpc_type", "grpc_service", "grpc_method")
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_CODE_NAMES = {code: code.name for code in grpc.StatusCode}
_calls = HotLogger("keel.call")

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


_HELP = {
    "started": "RPCs started on the server.",
    "handled": "RPCs completed on the server, regardless of success or failure.",
    "received": "RPC stream messages received on the server.",
    "sent": "gRPC stream messages sent on the server.",
    "seconds": "Histogram of response latency (seconds) of gRPC that had been application-level "
    "handled by the server.",
}
_BOUNDS = Histogram.DEFAULT_BUCKETS[:-1]  # the last is +Inf
_LE = [floatToGoString(bound) for bound in Histogram.DEFAULT_BUCKETS]  # type: ignore[no-untyped-call]


class Tally:
    """One method's server metrics as plain numbers (changed on the event loop's thread only)."""

    __slots__ = ("buckets", "handled", "received", "seconds", "sent", "started")

    def __init__(self) -> None:
        self.started = 0
        self.received = 0
        self.sent = 0
        self.handled: dict[grpc.StatusCode, int] = {}
        self.buckets = [0] * (len(_BOUNDS) + 1)
        """Calls per histogram bucket, not cumulative; the last is +Inf."""
        self.seconds = 0.0


class _TallyCollector:
    """Reports tallies as go-grpc-prometheus metric families when the registry is scraped."""

    def __init__(self, tallies: dict[tuple[str, str, str], Tally]) -> None:
        self._tallies = tallies

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        started, handled, received, sent, seconds = self._families()
        for labels, tally in list(self._tallies.items()):
            started.add_metric(labels, tally.started)
            received.add_metric(labels, tally.received)
            sent.add_metric(labels, tally.sent)
            for code, count in list(tally.handled.items()):
                handled.add_metric((*labels, code.name), count)
            cumulative = itertools.accumulate(list(tally.buckets))
            seconds.add_metric(
                labels, buckets=list(zip(_LE, cumulative, strict=True)), sum_value=tally.seconds
            )
        yield from (started, handled, received, sent, seconds)

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        HistogramMetricFamily,
    ]:
        return (
            CounterMetricFamily("grpc_server_started", _HELP["started"], labels=_LABELS),
            CounterMetricFamily(
                "grpc_server_handled", _HELP["handled"], labels=(*_LABELS, "grpc_code")
            ),
            CounterMetricFamily("grpc_server_msg_received", _HELP["received"], labels=_LABELS),
            CounterMetricFamily("grpc_server_msg_sent", _HELP["sent"], labels=_LABELS),
            HistogramMetricFamily("grpc_server_handling_seconds", _HELP["seconds"], labels=_LABELS),
        )


class ServerMetrics:
    """The server-side gRPC metrics, registered once per registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = prometheus_client.REGISTRY if registry is None else registry
        self.shared = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        """prometheus_client's multiprocess mode: its own metrics, not tallies."""
        self._tallies: dict[tuple[str, str, str], Tally] = {}
        if not self.shared:
            registry.register(_TallyCollector(self._tallies))
            return
        self.started = Counter("grpc_server_started", _HELP["started"], _LABELS, registry=registry)
        self.handled = Counter(
            "grpc_server_handled",
            _HELP["handled"],
            (*_LABELS, "grpc_code"),
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received", _HELP["received"], _LABELS, registry=registry
        )
        self.sent = Counter("grpc_server_msg_sent", _HELP["sent"], _LABELS, registry=registry)
        self.seconds = Histogram(
            "grpc_server_handling_seconds", _HELP["seconds"], _LABELS, registry=registry
        )

    def tally(self, labels: tuple[str, str, str]) -> Tally | None:
        """The tally of one method's label set (shared by every server in the process); None
        in multiprocess mode."""
        if self.shared:
            return None
        return self._tallies.setdefault(labels, Tally())


_default_metrics: ServerMetrics | None = None


def default_metrics() -> ServerMetrics:
    """The metrics in prometheus_client's default registry (created on first use)."""
    global _default_metrics  # noqa: PLW0603 (one set of collectors per process registry)
    if _default_metrics is None:
        _default_metrics = ServerMetrics()
    return _default_metrics


def status_code(value: Any) -> grpc.StatusCode:
    """A grpc.StatusCode from what a context reports (a StatusCode, an int or None → OK)."""
    if isinstance(value, grpc.StatusCode):
        return value
    if isinstance(value, int):
        return _CODES.get(value, grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.OK


@dataclass(frozen=True)
class Observation:
    """What to record for calls: per-call log lines and/or metrics."""

    log_calls: bool = True
    metrics: ServerMetrics | None = None

    def for_method(self, spec: MethodSpec[Any, Any]) -> MethodObserver:
        return MethodObserver(spec, self)


class MethodObserver:
    """Records the calls of one method; label children are bound once, not per call."""

    def __init__(self, spec: MethodSpec[Any, Any], observation: Observation) -> None:
        self.spec = spec
        self.log_calls = observation.log_calls
        self.metrics = observation.metrics
        self._service, _, self._method = spec.path[1:].partition("/")
        labels = (GRPC_TYPE[spec.kind], self._service, self._method)
        self._labels = labels
        self._tally = None if self.metrics is None else self.metrics.tally(labels)
        if self.metrics is not None and self._tally is None:
            self._started = self.metrics.started.labels(*labels)
            self._received = self.metrics.received.labels(*labels)
            self._sent = self.metrics.sent.labels(*labels)
            self._seconds = self.metrics.seconds.labels(*labels)
        self._handled: dict[grpc.StatusCode, Any] = {}
        self.tracer = tracing.tracer()
        self.lost_lines = 0
        """Per-call log lines that could not be written."""

    @property
    def active(self) -> bool:
        return self.log_calls or self.metrics is not None or self.tracer is not None

    def started(self) -> float:
        tally = self._tally
        if tally is not None:
            tally.started += 1
        elif self.metrics is not None:
            self._started.inc()
        return time.perf_counter()

    def received(self) -> None:
        tally = self._tally
        if tally is not None:
            tally.received += 1
        elif self.metrics is not None:
            self._received.inc()

    def sent(self) -> None:
        tally = self._tally
        if tally is not None:
            tally.sent += 1
        elif self.metrics is not None:
            self._sent.inc()

    def finished(self, began: float, code: grpc.StatusCode, context: Any) -> None:
        """Record one finished call (the context is asked for the peer only when logging)."""
        elapsed = time.perf_counter() - began
        tally = self._tally
        if tally is not None:
            handled_count = tally.handled
            handled_count[code] = handled_count.get(code, 0) + 1
            tally.buckets[bisect_left(_BOUNDS, elapsed)] += 1
            tally.seconds += elapsed
        elif self.metrics is not None:
            handled = self._handled.get(code)
            if handled is None:
                handled = self.metrics.handled.labels(*self._labels, code.name)
                self._handled[code] = handled
            handled.inc()
            self._seconds.observe(elapsed)
        if self.log_calls:
            try:
                _calls.line(
                    "rpc",
                    {
                        "service": self._service,
                        "method": self._method,
                        "code": _CODE_NAMES[code],
                        "duration_ms": round(elapsed * 1000, 3),
                        "correlation_id": correlation.current(),
                        "peer": context.peer(),
                    },
                )
            except (OSError, ValueError):  # stdout closed or broken: the call still succeeds
                self.lost_lines += 1


class ClientMetrics:
    """The client-side twins: grpc_client_started_total, ..._handled_total, ..._handling_seconds."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = prometheus_client.REGISTRY if registry is None else registry
        self.started = Counter(
            "grpc_client_started", "RPCs started on the client.", _LABELS, registry=registry
        )
        self.handled = Counter(
            "grpc_client_handled",
            "RPCs completed by the client, regardless of success or failure.",
            (*_LABELS, "grpc_code"),
            registry=registry,
        )
        self.received = Counter(
            "grpc_client_msg_received",
            "RPC stream messages received by the client.",
            _LABELS,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_client_msg_sent",
            "gRPC stream messages sent by the client.",
            _LABELS,
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_client_handling_seconds",
            "Histogram of response latency (seconds) of the gRPC until it is finished by the "
            "application.",
            _LABELS,
            registry=registry,
        )


_client_metrics: ClientMetrics | None = None


def client_metrics() -> ClientMetrics:
    """The client metrics in prometheus_client's default registry (created on first use)."""
    global _client_metrics  # noqa: PLW0603
    if _client_metrics is None:
        _client_metrics = ClientMetrics()
    return _client_metrics


class ClientObserver:
    """Counts the calls of one client method."""

    def __init__(self, spec: MethodSpec[Any, Any], metrics: ClientMetrics) -> None:
        service, _, method = spec.path[1:].partition("/")
        self._labels = (GRPC_TYPE[spec.kind], service, method)
        self._metrics = metrics
        self._started = metrics.started.labels(*self._labels)
        self._seconds = metrics.seconds.labels(*self._labels)
        self.sent = metrics.sent.labels(*self._labels).inc
        self.received = metrics.received.labels(*self._labels).inc
        self._handled: dict[grpc.StatusCode, Any] = {}

    def started(self) -> float:
        self._started.inc()
        return time.perf_counter()

    def finished(self, began: float, code: grpc.StatusCode) -> None:
        handled = self._handled.get(code)
        if handled is None:
            handled = self._metrics.handled.labels(*self._labels, code.name)
            self._handled[code] = handled
        handled.inc()
        self._seconds.observe(time.perf_counter() - began)
