"""gRPC metrics of one process, as go-grpc-prometheus names them, so existing dashboards work.

Server: `grpc_server_started_total`, `grpc_server_handled_total{grpc_code}`,
`grpc_server_msg_received_total`, `grpc_server_msg_sent_total` and the
`grpc_server_handling_seconds` histogram; clients: the `grpc_client_*` twins. Each is labelled
grpc_type, grpc_service, grpc_method.

Servers and clients count each method's calls in an array of numbers that a collector reports
when scraped (keel.runtime.tally): prometheus_client's own counters cost a tenth to a fifth of
an echo call. One set of server and one of client metrics per process, in prometheus_client's
default registry, made on first use.
"""

from __future__ import annotations

import os
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry

from keel.runtime import tally
from keel.runtime.httpmetrics import HttpMetrics
from keel.runtime.spec import MethodSpec, RpcKind

GRPC_TYPE = {
    RpcKind.UNARY_UNARY: "unary",
    RpcKind.UNARY_STREAM: "server_stream",
    RpcKind.STREAM_UNARY: "client_stream",
    RpcKind.STREAM_STREAM: "bidi_stream",
}

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


class ClientMetrics(CallMetrics):
    """The client-side twins: grpc_client_started_total, ..._handled_total, ..._handling_seconds."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("client", registry)


_default_metrics: ServerMetrics | None = None
_client_metrics: ClientMetrics | None = None
_http_metrics: HttpMetrics | None = None


def forget_default_metrics() -> None:
    """Drop this process's default server, client and HTTP metrics; the next use makes them
    afresh.

    Keel's worker supervisor calls this before it forks, so no worker counts into arrays, or
    reports through collectors, that it inherited.
    """
    global _default_metrics, _client_metrics, _http_metrics  # noqa: PLW0603
    for metrics in (_default_metrics, _client_metrics, _http_metrics):
        if metrics is not None:
            metrics.close()
    _default_metrics = _client_metrics = _http_metrics = None


def default_metrics() -> ServerMetrics:
    """The metrics in prometheus_client's default registry (created on first use)."""
    global _default_metrics  # noqa: PLW0603 (one set of collectors per process registry)
    if _default_metrics is None:
        _default_metrics = ServerMetrics()
    return _default_metrics


def client_metrics() -> ClientMetrics:
    """The client metrics in prometheus_client's default registry (created on first use)."""
    global _client_metrics  # noqa: PLW0603
    if _client_metrics is None:
        _client_metrics = ClientMetrics()
    return _client_metrics


def http_metrics() -> HttpMetrics:
    """The edge's HTTP request metrics in prometheus_client's default registry (created on
    first use; keel.runtime.httpmetrics)."""
    global _http_metrics  # noqa: PLW0603
    if _http_metrics is None:
        _http_metrics = HttpMetrics()
    return _http_metrics
