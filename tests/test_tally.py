"""Server counts shared by worker processes through memory-mapped files (keel.runtime.tally)."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import prometheus_client
import pytest
from keel.runtime import tally
from keel.runtime.observe import (
    ClientMetrics,
    ClientObserver,
    MethodObserver,
    Observation,
    ServerMetrics,
)
from prometheus_client import CollectorRegistry

from tests.servers.kitchen_server import kitchen_keel

METHODS = kitchen_keel.KitchenServiceBase.__keel_service__.methods
CALLS = (  # method index, seconds taken, status
    (0, 0.003, grpc.StatusCode.OK),
    (0, 0.2, grpc.StatusCode.NOT_FOUND),
    (1, 0.02, grpc.StatusCode.OK),
    (0, 3.0, grpc.StatusCode.OK),
    (1, 0.0, grpc.StatusCode.INVALID_ARGUMENT),
)


def _record(metrics: ServerMetrics, calls: tuple[tuple[int, float, grpc.StatusCode], ...]) -> None:
    observers = [MethodObserver(m, Observation(log_calls=False, metrics=metrics)) for m in METHODS]
    for index, seconds, code in calls:
        observer = observers[index]
        observer.started()
        observer.received()
        observer.sent()
        # Durations land mid-bucket, so both sides bucket them alike.
        observer.finished(time.perf_counter() - seconds - 0.0001, code, None)


def _without_sums(text: str) -> str:
    """Exposition text minus the histogram sums (measured durations differ by microseconds)."""
    return "\n".join(line for line in text.splitlines() if "_seconds_sum" not in line)


def test_worker_files_add_up_to_what_one_process_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_process = CollectorRegistry()
    _record(ServerMetrics(one_process), CALLS)

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    first, second = ServerMetrics(CollectorRegistry()), ServerMetrics(CollectorRegistry())
    _record(first, CALLS[:2])  # two "workers", each with some of the calls
    _record(second, CALLS[2:])
    assert len(list(tmp_path.glob("keel_server_*.tally"))) == 2 * len(METHODS)

    merged = CollectorRegistry()
    merged.register(tally.shared_collector(str(tmp_path), "server"))
    shared_text = prometheus_client.generate_latest(merged).decode()
    alone_text = prometheus_client.generate_latest(one_process).decode()
    assert 'grpc_code="NOT_FOUND"' in shared_text
    assert _without_sums(shared_text) == _without_sums(alone_text)
    labels = {"grpc_type": "unary", "grpc_service": METHODS[0].service, "grpc_method": "Cook"}
    total = merged.get_sample_value("grpc_server_handling_seconds_sum", labels)
    assert total == pytest.approx(3.2, abs=0.05)


def test_counts_are_read_while_they_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics = ServerMetrics(CollectorRegistry())
    observer = MethodObserver(METHODS[0], Observation(log_calls=False, metrics=metrics))
    labels = ("unary", METHODS[0].service, METHODS[0].name)
    for expected in range(1, 4):
        observer.finished(observer.started(), grpc.StatusCode.OK, None)
        counts = tally.read_shared(str(tmp_path), "server")[labels]
        assert counts[tally.STARTED] == expected
        assert counts[tally.HANDLED[grpc.StatusCode.OK]] == expected


def test_files_that_are_not_count_files_are_skipped(tmp_path: Path) -> None:
    counts = tally.shared_counts(str(tmp_path), "server", ("unary", "a.v1.A", "Get"))
    counts[tally.STARTED] += 2
    (tmp_path / "keel_server_1_0.tally").write_bytes(b"not a count file")
    (tmp_path / "keel_server_1_1.tmp").write_bytes(b"half written")
    assert {
        labels: row[tally.STARTED]
        for labels, row in tally.read_shared(str(tmp_path), "server").items()
    } == {("unary", "a.v1.A", "Get"): 2}


def test_client_counts_are_shared_apart_from_server_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    observer = ClientObserver(METHODS[0], ClientMetrics(CollectorRegistry()))
    for code in (grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE):
        observer.finished(observer.started(), code)
    merged = CollectorRegistry()
    for side in tally.SIDES:
        merged.register(tally.shared_collector(str(tmp_path), side))
    labels = {"grpc_type": "unary", "grpc_service": METHODS[0].service, "grpc_method": "Cook"}
    handled = "grpc_client_handled_total"
    assert merged.get_sample_value(handled, {**labels, "grpc_code": "OK"}) == 2
    assert merged.get_sample_value(handled, {**labels, "grpc_code": "UNAVAILABLE"}) == 1
    assert merged.get_sample_value("grpc_client_handling_seconds_count", labels) == 3
    assert merged.get_sample_value("grpc_server_started_total", labels) is None
