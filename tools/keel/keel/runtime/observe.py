"""Per-call observation on the server: one log line and go-grpc-prometheus metrics per call.

Metric names and labels follow go-grpc-prometheus, so existing Grafana dashboards work:
`grpc_server_started_total`, `grpc_server_handled_total{grpc_code}`,
`grpc_server_msg_received_total`, `grpc_server_msg_sent_total` and the
`grpc_server_handling_seconds` histogram, each labelled grpc_type, grpc_service, grpc_method.

Servers and clients count each method's calls in an array of numbers that a collector reports
when scraped (keel.runtime.tally): prometheus_client's own counters cost a tenth to a fifth of
an echo call.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry

from keel.runtime import correlation, tally, tracing
from keel.runtime.logs import HotLogger
from keel.runtime.spec import MethodSpec, RpcKind

GRPC_TYPE = {
    RpcKind.UNARY_UNARY: "unary",
    RpcKind.UNARY_STREAM: "server_stream",
    RpcKind.STREAM_UNARY: "client_stream",
    RpcKind.STREAM_STREAM: "bidi_stream",
}
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_CODE_NAMES = {code: code.name for code in grpc.StatusCode}
_calls = HotLogger("keel.call")

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


def method_labels(spec: MethodSpec[Any, Any]) -> tally.Labels:
    """A method's go-grpc-prometheus labels: grpc_type, grpc_service, grpc_method."""
    service, _, method = spec.path[1:].partition("/")
    return (GRPC_TYPE[spec.kind], service, method)


class CallMetrics:
    """One side's gRPC metrics in one registry: a count array per method (keel.runtime.tally).

    `registry` reports this process's counts. With `PROMETHEUS_MULTIPROC_DIR` set the arrays are
    also files in that folder, which `tally.shared_collector` sums over processes (Keel's worker
    supervisor serves that sum; a registry of your own with prometheus_client's
    MultiProcessCollector needs it added).
    """

    def __init__(self, side: tally.Side, registry: CollectorRegistry | None = None) -> None:
        self.side = side
        self.folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        """prometheus_client's multiprocess folder, where the counts are shared."""
        self._counts: dict[tally.Labels, tally.Counts] = {}
        self._registry = prometheus_client.REGISTRY if registry is None else registry
        self._collector = tally.TallyCollector(side, lambda: self._counts)
        self._registry.register(self._collector)

    def close(self) -> None:
        """Stop reporting these counts (their registry forgets them)."""
        self._registry.unregister(self._collector)

    def counts(self, spec: MethodSpec[Any, Any]) -> tally.Counts:
        """The count array of one method (shared by every server or client in the process)."""
        labels = method_labels(spec)
        counts = self._counts.get(labels)
        if counts is None:
            if self.folder is None:
                counts = tally.private_counts()
            else:
                counts = tally.shared_counts(self.folder, self.side, labels)
            self._counts[labels] = counts
        return counts


class ServerMetrics(CallMetrics):
    """grpc_server_started_total, ..._handled_total, ..._msg_*_total, ..._handling_seconds."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("server", registry)


_default_metrics: ServerMetrics | None = None
_client_metrics: ClientMetrics | None = None


def forget_default_metrics() -> None:
    """Drop this process's default server and client metrics; the next use makes them afresh.

    Keel's worker supervisor calls this before it forks, so no worker counts into arrays, or
    reports through collectors, that it inherited.
    """
    global _default_metrics, _client_metrics  # noqa: PLW0603
    for metrics in (_default_metrics, _client_metrics):
        if metrics is not None:
            metrics.close()
    _default_metrics = _client_metrics = None


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
        self._counts = None if self.metrics is None else self.metrics.counts(spec)
        self.tracer = tracing.tracer()
        self.lost_lines = 0
        """Per-call log lines that could not be written."""

    @property
    def active(self) -> bool:
        return self.log_calls or self.metrics is not None or self.tracer is not None

    def started(self) -> float:
        counts = self._counts
        if counts is not None:
            counts[tally.STARTED] += 1
        return time.perf_counter()

    def received(self) -> None:
        counts = self._counts
        if counts is not None:
            counts[tally.RECEIVED] += 1

    def sent(self) -> None:
        counts = self._counts
        if counts is not None:
            counts[tally.SENT] += 1

    def finished(self, began: float, code: grpc.StatusCode, context: Any) -> None:
        """Record one finished call (the context is asked for the peer only when logging)."""
        elapsed = time.perf_counter() - began
        if self._counts is not None:
            tally.finish(self._counts, code, elapsed)
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


class ClientMetrics(CallMetrics):
    """The client-side twins: grpc_client_started_total, ..._handled_total, ..._handling_seconds."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("client", registry)


def client_metrics() -> ClientMetrics:
    """The client metrics in prometheus_client's default registry (created on first use)."""
    global _client_metrics  # noqa: PLW0603
    if _client_metrics is None:
        _client_metrics = ClientMetrics()
    return _client_metrics


class ClientObserver:
    """Counts the calls of one client method."""

    __slots__ = ("_counts",)

    def __init__(self, spec: MethodSpec[Any, Any], metrics: ClientMetrics) -> None:
        self._counts = metrics.counts(spec)

    def started(self) -> float:
        self._counts[tally.STARTED] += 1
        return time.perf_counter()

    def sent(self) -> None:
        self._counts[tally.SENT] += 1

    def received(self) -> None:
        self._counts[tally.RECEIVED] += 1

    def finished(self, began: float, code: grpc.StatusCode) -> None:
        tally.finish(self._counts, code, time.perf_counter() - began)
