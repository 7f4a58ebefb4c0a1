"""HTTP requests at an edge (`keel gateway`, a service's REST port) as a Prometheus histogram.

OpenTelemetry's `http.server.request.duration`, as its Prometheus exporter names it:
`http_server_request_duration_seconds`, labelled `http_request_method`, `http_route` (the
template that matched, "" when none did) and `http_response_status_code` (499: the client went
away first). Its `_count` counts requests, so one family answers "how many, how fast, how many
failed" per route, however the request reached its service (transcoded to gRPC or passed
through to the service's REST port).

Counted as keel.runtime.tally counts gRPC calls: one array of numbers per label set (the
durations' sum and the count in each bucket), in memory, or in a memory-mapped file when
worker processes share a port, summed by whoever serves /metrics.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric

from keel.runtime import tally

NAME = "http_server_request_duration_seconds"
LABEL_NAMES = ("http_request_method", "http_route", "http_response_status_code")
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
"""HTTP's own methods; another is counted as `_OTHER` unless a route matched it (a custom verb
of the API), so clients cannot make new series at will (OpenTelemetry's rule)."""
OTHER = "_OTHER"
_SIDE: tally.Side = "http"
SECONDS = 0
BUCKETS = 1
SIZE = BUCKETS + len(tally.BOUNDS) + 1
_HELP = "Duration of HTTP server requests."


class HttpMetrics:
    """The edge's request histogram in one registry (prometheus_client's default by default).

    With `PROMETHEUS_MULTIPROC_DIR` set (keel.runtime.workers) each label set's counts are also a
    file in that folder, which `shared_collector` sums over processes.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self._counts: dict[tuple[str, str, int], tally.Counts] = {}
        self._registry = prometheus_client.REGISTRY if registry is None else registry
        self._collector = HttpCollector(self._labelled)
        self._registry.register(self._collector)

    def close(self) -> None:
        """Stop reporting these counts (their registry forgets them)."""
        self._registry.unregister(self._collector)

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request (`route`: the template that matched, "" if none)."""
        if not route and method not in METHODS:
            method = OTHER
        key = (method, route, status)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = self._new(key)
        counts[BUCKETS + bisect_left(tally.BOUNDS, seconds)] += 1
        counts[SECONDS] += seconds

    def _new(self, key: tuple[str, str, int]) -> tally.Counts:
        if self.folder is None:
            return tally.private_counts(SIZE)
        return tally.shared_counts(self.folder, _SIDE, _labels(key), SIZE)

    def _labelled(self) -> dict[tally.Labels, tally.Counts]:
        return {_labels(key): counts for key, counts in self._counts.items()}


def _labels(key: tuple[str, str, int]) -> tally.Labels:
    method, route, status = key
    return (method, route, str(status))


class HttpCollector:
    """Reports the edge's counts as the `http_server_request_duration_seconds` histogram."""

    def __init__(self, source: Callable[[], Mapping[tally.Labels, tally.Counts]]) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(NAME, _HELP, labels=LABEL_NAMES)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(NAME, _HELP, labels=LABEL_NAMES)
        for labels, counts in sorted(self._source().items()):
            family.add_metric(
                labels, buckets=tally.buckets(counts, BUCKETS), sum_value=counts[SECONDS]
            )
        yield family


def shared_collector(folder: str) -> HttpCollector:
    """A collector of every process's edge counts in `folder` (for /metrics)."""
    return HttpCollector(lambda: tally.read_shared(folder, _SIDE, SIZE))
