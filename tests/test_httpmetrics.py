"""HTTP requests at an edge, counted as `http_server_request_duration_seconds`
(keel.runtime.httpmetrics): the exposition, the series a client can and cannot make, and worker
files that add up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import prometheus_client
import pytest
from keel.runtime import httpmetrics, tally, workers
from keel.runtime.httpmetrics import HttpMetrics
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

# (method, route, status, seconds): some on bucket bounds, one above the last bound
REQUESTS = (
    ("GET", "/v1/items/{id}", 200, 0.003),
    ("GET", "/v1/items/{id}", 200, 0.005),
    ("GET", "/v1/items/{id}", 404, 0.1),
    ("POST", "/v1/items", 400, 2.5),
    ("SEARCH", "/v1/items:search", 200, 12.0),  # a custom verb the API routes
    ("GET", "", 404, 0.001),  # no route matched
)


def _text(registry: CollectorRegistry) -> list[str]:
    return sorted(prometheus_client.generate_latest(registry).decode().splitlines())


def _counts(text: str) -> dict[tuple[str, str, str], float]:
    """`_count` of each (method, route, status) series in Prometheus text."""
    return {
        (
            s.labels["http_request_method"],
            s.labels["http_route"],
            s.labels["http_response_status_code"],
        ): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == f"{httpmetrics.NAME}_count"
    }


def test_exposition_is_prometheus_clients_own_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counted = HttpMetrics(ours)
    histogram = Histogram(
        httpmetrics.NAME.removesuffix("_seconds"),
        "Duration of HTTP server requests.",
        httpmetrics.LABEL_NAMES,
        registry=theirs,
        unit="seconds",
    )
    for method, route, status, seconds in REQUESTS:
        counted.record(method, route, status, seconds)
        histogram.labels(method, route, str(status)).observe(seconds)
    assert _text(ours) == _text(theirs)
    assert _counts("\n".join(_text(ours)))[("GET", "/v1/items/{id}", "200")] == 2


def test_a_method_no_route_answers_is_one_series() -> None:
    registry = CollectorRegistry()
    counted = HttpMetrics(registry)
    for method in ("BREW", "FOO", "DELETE"):
        counted.record(method, "", 405, 0.001)
    counted.record("BREW", "/v1/pots:brew", 200, 0.001)  # routed: a verb of the API
    found = _counts(prometheus_client.generate_latest(registry).decode())
    assert found == {
        ("_OTHER", "", "405"): 2,
        ("DELETE", "", "405"): 1,
        ("BREW", "/v1/pots:brew", "200"): 1,
    }


def test_worker_files_add_up_to_what_one_process_reports(tmp_path: Path) -> None:
    alone = CollectorRegistry()
    one = HttpMetrics(alone)
    for request in REQUESTS:
        one.record(*request)
    for half in (REQUESTS[::2], REQUESTS[1::2]):  # two "workers", each with its own files
        worker = HttpMetrics(CollectorRegistry())
        worker.folder = str(tmp_path)
        for request in half:
            worker.record(*request)
    merged = CollectorRegistry()
    merged.register(httpmetrics.shared_collector(str(tmp_path)))
    assert _text(merged) == _text(alone)
    assert {p.name.split("_")[1] for p in tmp_path.iterdir()} == {"http"}


def test_edge_files_are_not_read_as_grpc_counts(tmp_path: Path) -> None:
    worker = HttpMetrics(CollectorRegistry())
    worker.folder = str(tmp_path)
    worker.record("GET", "/v1/items/{id}", 200, 0.01)
    assert tally.read_shared(str(tmp_path), "server") == {}
    assert tally.read_shared(str(tmp_path), "client") == {}
    assert len(tally.read_shared(str(tmp_path), "http", httpmetrics.SIZE)) == 1


def test_the_merged_view_of_workers_includes_the_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    worker = HttpMetrics(CollectorRegistry())  # (reads the folder from the environment)
    worker.record("GET", "/v1/items/{id}", 503, 0.2)
    found = _counts(workers.merged_metrics().decode())
    assert found == {("GET", "/v1/items/{id}", "503"): 1}


def test_forked_workers_count_afresh(tmp_path: Path) -> None:
    """A worker's default edge metrics are made after its fork, in the shared folder."""
    script = f"""
import os
from keel.runtime import metrics
metrics.http_metrics().record("GET", "/inherited", 200, 0.01)  # the parent's, before the fork
os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
metrics.forget_default_metrics()
metrics.http_metrics().record("GET", "/v1/items/{{id}}", 200, 0.01)
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    found = tally.read_shared(str(tmp_path), "http", httpmetrics.SIZE)
    assert list(found) == [("GET", "/v1/items/{id}", "200")]
