"""gRPC call counts as arrays, shared by worker processes through files (keel.runtime.tally)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import prometheus_client
import pytest
from keel.runtime import tally
from keel.runtime.metrics import (
    CallMetrics,
    ClientMetrics,
    ServerMetrics,
    method_labels,
)
from keel.runtime.observe import MethodObserver, Observation
from keel.runtime.spec import MethodSpec
from prometheus_client import CollectorRegistry, Counter, Histogram

from tests.servers.kitchen_server import kitchen_keel

METHODS = kitchen_keel.KitchenServiceBase.__keel_service__.methods
COOK, FOLLOW = METHODS[0], METHODS[1]
# (method, seconds taken, status): some on bucket bounds, one above the last bound
CALLS = (
    (COOK, 0.003, grpc.StatusCode.OK),
    (COOK, 0.005, grpc.StatusCode.NOT_FOUND),
    (FOLLOW, 0.1, grpc.StatusCode.OK),
    (COOK, 3.0, grpc.StatusCode.OK),
    (FOLLOW, 12.5, grpc.StatusCode.INVALID_ARGUMENT),
    (COOK, 10.0, grpc.StatusCode.OK),
)


_labels = method_labels


Call = tuple[MethodSpec[Any, Any], float, grpc.StatusCode]


def _record(metrics: CallMetrics, calls: tuple[Call, ...]) -> None:
    for spec, seconds, code in calls:
        counts = metrics.counts(spec)
        counts[tally.STARTED] += 1
        counts[tally.RECEIVED] += 1
        counts[tally.SENT] += 1
        tally.finish(counts, code, seconds)  # exact durations: the same buckets every run


def _text(registry: CollectorRegistry) -> list[str]:
    return sorted(prometheus_client.generate_latest(registry).decode().splitlines())


def test_exposition_is_prometheus_clients_own() -> None:
    ours = CollectorRegistry()
    _record(ServerMetrics(ours), CALLS)
    theirs = CollectorRegistry()
    names = tally.LABEL_NAMES
    texts = tally._HELP["server"]
    started = Counter("grpc_server_started", texts["started"], names, registry=theirs)
    handled = Counter(
        "grpc_server_handled", texts["handled"], (*names, "grpc_code"), registry=theirs
    )
    received = Counter("grpc_server_msg_received", texts["received"], names, registry=theirs)
    sent = Counter("grpc_server_msg_sent", texts["sent"], names, registry=theirs)
    seconds = Histogram("grpc_server_handling_seconds", texts["seconds"], names, registry=theirs)
    for spec, taken, code in CALLS:
        labels = _labels(spec)
        for counter in (started, received, sent):
            counter.labels(*labels).inc()
        handled.labels(*labels, code.name).inc()
        seconds.labels(*labels).observe(taken)
    assert _text(ours) == _text(theirs)


def test_worker_files_add_up_to_what_one_process_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_process = CollectorRegistry()
    _record(ServerMetrics(one_process), CALLS)

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    first, second = ServerMetrics(CollectorRegistry()), ServerMetrics(CollectorRegistry())
    _record(first, CALLS[:2])  # two "workers", each with some of the calls
    _record(second, CALLS[2:])
    # One file per method and process: Cook in the first; Follow and Cook in the second.
    assert len(list(tmp_path.glob("keel_server_*.tally"))) == 3

    merged = CollectorRegistry()
    merged.register(tally.shared_collector(str(tmp_path), "server"))
    assert any('grpc_code="NOT_FOUND"' in line for line in _text(merged))
    assert _text(merged) == _text(one_process)


def test_a_single_process_reports_its_counts_in_multiprocess_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = CollectorRegistry()
    observer = MethodObserver(COOK, Observation(log_calls=False, metrics=ServerMetrics(registry)))
    observer.finished(observer.started(), grpc.StatusCode.OK, None)
    labels = dict(zip(tally.LABEL_NAMES, _labels(COOK), strict=True))
    assert registry.get_sample_value("grpc_server_started_total", labels) == 1
    assert list(tmp_path.glob("keel_server_*.tally"))  # and shared with its siblings


def test_shared_counts_are_current_at_every_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics = ServerMetrics(CollectorRegistry())
    observer = MethodObserver(COOK, Observation(log_calls=False, metrics=metrics))
    for expected in range(1, 4):
        observer.finished(observer.started(), grpc.StatusCode.OK, None)
        counts = tally.read_shared(str(tmp_path), "server")[_labels(COOK)]
        assert counts[tally.STARTED] == expected
        assert counts[tally.HANDLED[grpc.StatusCode.OK]] == expected


def test_files_that_are_not_whole_count_files_are_skipped(tmp_path: Path) -> None:
    counts = tally.shared_counts(str(tmp_path), "server", ("unary", "a.v1.A", "Get"))
    counts[tally.STARTED] += 2
    whole = next(tmp_path.glob("keel_server_*.tally")).read_bytes()
    header = b"keeltly1" + struct.pack("<Q", 5)
    for name, content in {
        "keel_server_1_0_x.tally": b"not a count file",
        "keel_server_1_1_x.tally": b"",
        "keel_server_1_2_x.tally": whole[:-8],  # cut short
        "keel_server_1_3_x.tally": header + b"{bad}" + bytes(8 * tally.SIZE + 3),
        "keel_server_1_4_x.tmp": whole,  # not yet renamed into place
    }.items():
        (tmp_path / name).write_bytes(content)
    totals = tally.read_shared(str(tmp_path), "server")
    assert {labels: row[tally.STARTED] for labels, row in totals.items()} == {
        ("unary", "a.v1.A", "Get"): 2
    }


def test_client_counts_are_shared_apart_from_server_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    counts = ClientMetrics(CollectorRegistry()).counts(COOK)
    for code in (grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE):
        counts[tally.STARTED] += 1
        tally.finish(counts, code, 0.001)
    merged = CollectorRegistry()
    for side in tally.SIDES:
        merged.register(tally.shared_collector(str(tmp_path), side))
    labels = dict(zip(tally.LABEL_NAMES, _labels(COOK), strict=True))
    handled = "grpc_client_handled_total"
    assert merged.get_sample_value(handled, {**labels, "grpc_code": "OK"}) == 2
    assert merged.get_sample_value(handled, {**labels, "grpc_code": "UNAVAILABLE"}) == 1
    assert merged.get_sample_value("grpc_client_handling_seconds_count", labels) == 3
    assert merged.get_sample_value("grpc_server_started_total", labels) is None


FORGET = """
import os, sys
from keel.runtime import metrics
before = metrics.client_metrics(), metrics.default_metrics()  # made before any fork
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
metrics.forget_default_metrics()  # what the worker supervisor does before it forks
after = metrics.client_metrics(), metrics.default_metrics()  # no clash in the registry
print(before[0] is after[0], before[1] is after[1], after[0].folder, after[1].folder)
"""


def test_workers_make_their_default_metrics_afresh(tmp_path: Path) -> None:
    # In a process of its own: the default metrics are process-wide.
    result = subprocess.run(
        [sys.executable, "-c", FORGET, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.split() == ["False", "False", str(tmp_path), str(tmp_path)]
