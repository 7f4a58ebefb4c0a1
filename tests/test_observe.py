"""Per-call logs and go-grpc-prometheus metrics, with no code in the service."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import io
import json
import re
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import keel
import prometheus_client
import pytest
import structlog
from keel.runtime import logs, propagation
from keel.runtime.metrics import ServerMetrics
from keel.runtime.observe import MethodObserver, Observation
from prometheus_client import REGISTRY, CollectorRegistry
from structlog.testing import capture_logs

from tests.conftest import free_port, start_kitchen_server
from tests.servers.kitchen_server import Kitchen, kitchen_keel, kitchen_pb2

SERVICE = "kitchen.v1.KitchenService"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _cook_labels(**extra: str) -> dict[str, str]:
    return {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "Cook", **extra}


@pytest.fixture
async def client() -> AsyncIterator[kitchen_keel.KitchenServiceClient]:
    async with (
        keel.Server([Kitchen()], port=0) as server,
        kitchen_keel.KitchenServiceClient.connect(f"127.0.0.1:{server.port}") as kitchen_client,
    ):
        yield kitchen_client


async def _cook(client: kitchen_keel.KitchenServiceClient, name: str) -> None:
    request = kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name=name))
    with contextlib.suppress(grpc.aio.AioRpcError):
        await client.cook(request, metadata=[("x-request-id", f"id-{name}")])


async def test_metrics_count_calls_by_code(client: kitchen_keel.KitchenServiceClient) -> None:
    before = {
        code: _sample("grpc_server_handled_total", **_cook_labels(grpc_code=code))
        for code in ("OK", "INVALID_ARGUMENT", "INTERNAL")
    }
    started = _sample("grpc_server_started_total", **_cook_labels())
    observed = _sample("grpc_server_handling_seconds_count", **_cook_labels())
    for name in ("a", "b", "c", "invalid", "explode"):
        await _cook(client, name)
    after = {
        code: _sample("grpc_server_handled_total", **_cook_labels(grpc_code=code))
        for code in before
    }
    assert {code: after[code] - before[code] for code in before} == {
        "OK": 3,
        "INVALID_ARGUMENT": 1,
        "INTERNAL": 1,
    }
    assert _sample("grpc_server_started_total", **_cook_labels()) - started == 5
    assert _sample("grpc_server_handling_seconds_count", **_cook_labels()) - observed == 5


async def test_stream_messages_are_counted(client: kitchen_keel.KitchenServiceClient) -> None:
    labels = {"grpc_type": "client_stream", "grpc_service": SERVICE, "grpc_method": "Stock"}
    received = _sample("grpc_server_msg_received_total", **labels)

    async def items() -> AsyncIterator[kitchen_pb2.StockRequest]:
        for quantity in (1, 2, 3):
            yield kitchen_pb2.StockRequest(quantity=quantity)

    assert (await client.stock(items())).total == 6
    assert _sample("grpc_server_msg_received_total", **labels) - received == 3
    assert _sample("grpc_server_msg_sent_total", **labels) >= 1


async def test_one_log_line_per_call(client: kitchen_keel.KitchenServiceClient) -> None:
    with capture_logs() as logs:
        await _cook(client, "soup")
        await _cook(client, "invalid")
    calls = [entry for entry in logs if entry["event"] == "rpc"]
    assert [(c["method"], c["code"], c["correlation_id"]) for c in calls] == [
        ("Cook", "OK", "id-soup"),
        ("Cook", "INVALID_ARGUMENT", "id-invalid"),
    ]
    for call in calls:
        assert call["service"] == SERVICE
        assert call["peer"].startswith("ipv4:127.0.0.1:")
        assert call["duration_ms"] >= 0
        # Request bodies are never logged.
        assert "soup" not in json.dumps({k: v for k, v in call.items() if k != "correlation_id"})


async def test_call_is_logged_before_the_caller_sees_its_status(
    client: kitchen_keel.KitchenServiceClient,
) -> None:
    # A failing call's status goes out when the call is aborted; its line must already exist.
    with capture_logs() as logs:
        for attempt in range(20):
            await _cook(client, "invalid" if attempt % 2 else "soup")
            assert sum(entry["event"] == "rpc" for entry in logs) == attempt + 1


def test_handling_histogram_buckets_are_cumulative_like_prometheus_clients() -> None:
    registry = CollectorRegistry()
    spec = kitchen_keel.KitchenServiceBase.__keel_service__.methods[0]
    observer = MethodObserver(spec, Observation(log_calls=False, metrics=ServerMetrics(registry)))
    durations = (0.003, 0.02, 0.2, 3.0, 20.0)
    for seconds in durations:
        observer.started()
        observer.finished(time.perf_counter() - seconds, grpc.StatusCode.OK, None)
    observer.finished(time.perf_counter(), grpc.StatusCode.NOT_FOUND, None)
    labels = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": spec.name}

    def bucket(le: str) -> float | None:
        return registry.get_sample_value(
            "grpc_server_handling_seconds_bucket", {**labels, "le": le}
        )

    assert [bucket(le) for le in ("0.005", "0.01", "0.025", "0.25", "5.0", "10.0", "+Inf")] == [
        2,  # the NOT_FOUND call took next to nothing
        2,
        3,
        4,
        5,
        5,
        6,
    ]
    assert registry.get_sample_value("grpc_server_handling_seconds_count", labels) == 6
    total = registry.get_sample_value("grpc_server_handling_seconds_sum", labels)
    assert total == pytest.approx(sum(durations), abs=0.05)
    assert registry.get_sample_value("grpc_server_started_total", labels) == 5
    handled = "grpc_server_handled_total"
    assert registry.get_sample_value(handled, {**labels, "grpc_code": "NOT_FOUND"}) == 1
    assert registry.get_sample_value(handled, {**labels, "grpc_code": "OK"}) == 5
    # The text exposition has every family, named and typed as prometheus_client's own.
    text = prometheus_client.generate_latest(registry).decode()
    for family, kind in (
        ("grpc_server_started_total", "counter"),
        ("grpc_server_handled_total", "counter"),
        ("grpc_server_msg_received_total", "counter"),
        ("grpc_server_msg_sent_total", "counter"),
        ("grpc_server_handling_seconds", "histogram"),
    ):
        assert f"# TYPE {family} {kind}" in text


async def test_call_logs_and_metrics_can_be_turned_off() -> None:
    quiet = keel.Server([Kitchen()], port=0, log_calls=False, metrics=False)
    async with (
        quiet as server,
        kitchen_keel.KitchenServiceClient.connect(f"127.0.0.1:{server.port}") as client,
    ):
        started = _sample("grpc_server_started_total", **_cook_labels())
        with capture_logs() as logs:
            await _cook(client, "quiet")
    assert [e for e in logs if e["event"] == "rpc"] == []
    assert _sample("grpc_server_started_total", **_cook_labels()) == started


async def test_metrics_served_on_their_own_port() -> None:
    metrics_port = free_port()
    process, port = start_kitchen_server({"KEEL_METRICS_PORT": str(metrics_port)})
    try:
        async with kitchen_keel.KitchenServiceClient.connect(f"127.0.0.1:{port}") as client:
            await _cook(client, "soup")
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        body = await asyncio.to_thread(lambda: direct.open(url, timeout=5).read())
        text = body.decode()
        assert (
            'grpc_server_handled_total{grpc_code="OK",grpc_method="Cook",'
            f'grpc_service="{SERVICE}",grpc_type="unary"}} 1.0'
        ) in text
        assert "grpc_server_handling_seconds_bucket" in text
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
    assert process.returncode == 0


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put structlog's configuration back: this test binds it to its own captured stdout."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.usefixtures("restored_logging")
def test_hot_logger_follows_reconfiguration(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info")
    hot = logs.HotLogger("keel.test")
    hot.get().info("before", where=Path("/tmp"), counts={1: "one"})
    with capture_logs() as captured:
        hot.get().info("inside", n=1)
    hot.get().info("after")
    assert captured == [{"event": "inside", "n": 1, "log_level": "info"}]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == ["before", "after"]
    # Values JSON cannot hold are written as their repr; non-string keys as strings.
    assert lines[0]["where"] == "PosixPath('/tmp')"
    assert lines[0]["counts"] == {"1": "one"}
    assert lines[0]["level"] == "info"


class _CallContext:
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None


@pytest.mark.usefixtures("restored_logging")
def test_hot_lines_are_the_lines_structlog_writes(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info")
    hot = logs.HotLogger("keel.test")
    fields = {"service": "s", "code": "OK", "duration_ms": 1.5, "where": Path("/x")}

    def in_a_call() -> None:
        propagation.bind("s", _CallContext([("x-request-id", "cid-1")]))
        structlog.contextvars.bind_contextvars(tenant="t1", code="from-context")
        hot.info("rpc", **fields)  # written directly
        hot.get().info("rpc", **fields)  # through structlog's processors

    contextvars.copy_context().run(in_a_call)
    direct, chained = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z"
    assert re.fullmatch(stamp, direct.pop("timestamp"))
    assert re.fullmatch(stamp, chained.pop("timestamp"))
    assert direct == chained
    assert direct == {
        "service": "s",
        "code": "OK",  # the call's own field wins over a context variable
        "duration_ms": 1.5,
        "where": "PosixPath('/x')",
        "event": "rpc",
        "tenant": "t1",
        "level": "info",
        "correlation_id": "cid-1",
    }


@pytest.mark.usefixtures("restored_logging")
def test_hot_lines_take_any_key_or_value_as_structlog_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("info")
    hot = logs.HotLogger("keel.test")
    cases: list[dict[Any, Any]] = [
        {"service": "s", "n": 1, "ok": True, "none": None, "nested": {"a": [1.5, "x"]}},
        {"counts": {1: "one", 2.5: "two"}, "where": Path("/x")},  # a key not a str, a Path
        {7: "seven"},
    ]
    for fields in cases:
        hot.line("rpc", dict(fields, correlation_id="c"))  # written directly
        hot.get().info("rpc", **{str(k): v for k, v in fields.items()}, correlation_id="c")
    out = capsys.readouterr().out
    assert out.endswith("\n")
    lines = out.splitlines()
    for direct, chained in zip(lines[::2], lines[1::2], strict=True):
        stamp = r',"timestamp":"[^"]*"'
        assert re.sub(stamp, "", direct) == re.sub(stamp, "", chained)
    assert json.loads(lines[2])["counts"] == {"1": "one", "2.5": "two"}
    assert json.loads(lines[2])["where"] == "PosixPath('/x')"
    assert json.loads(lines[4])["7"] == "seven"


@pytest.mark.usefixtures("restored_logging")
def test_hot_lines_follow_the_log_level(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("warning")
    logs.HotLogger("keel.test").info("rpc", code="OK")
    logs.configure("info")
    logs.HotLogger("keel.test").info("rpc", code="OK")
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_timestamps_match_structlogs_iso_utc_format() -> None:
    clock = logs.UtcClock()
    ours = datetime.datetime.fromisoformat(clock.now().replace("Z", "+00:00"))
    theirs = structlog.processors.TimeStamper(fmt="iso", utc=True)(None, "info", {})
    assert abs(ours - datetime.datetime.fromisoformat(theirs["timestamp"])) < datetime.timedelta(
        seconds=1
    )
    assert len(clock.now()) in (len(theirs["timestamp"]), len("2026-01-01T00:00:00Z"))


def test_timestamps_follow_the_clock_across_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = logs.UtcClock()
    second = 1_764_000_000_000_000  # microseconds since the epoch, a whole second
    moments = [
        second + 5,
        second + 999_999,
        second + 1_000_000,  # a whole second: no fraction, as isoformat writes it
        second + 1_000_001,
        second + 1_500_000,
        second + 3_000_000,  # a second skipped
        second + 2_000_000,  # the clock stepped back
        second - 1,
        second,
        second + 86_400_000_007,  # the next day
    ]
    for micros in moments:
        monkeypatch.setattr(logs, "_time_ns", lambda micros=micros: micros * 1000 + 999)
        moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=micros)
        assert clock.now() == moment.isoformat() + "Z"


@pytest.mark.usefixtures("restored_logging")
async def test_a_closed_stdout_does_not_fail_calls(tmp_path: Path) -> None:
    closed = (tmp_path / "stdout").open("w")
    closed.close()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(closed),
    )
    async with (
        keel.Server([Kitchen()], port=0) as server,
        kitchen_keel.KitchenServiceClient.connect(f"127.0.0.1:{server.port}") as client,
    ):
        reply = await client.cook(kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name="soup")))
    assert reply.HasField("dish")


class _CountingWriter(io.BufferedWriter):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_log_lines_outside_an_event_loop_are_flushed_at_once() -> None:
    raw = io.BytesIO()
    stream = logs.TurnFlushed(io.BufferedWriter(raw))
    stream.write(b"one\n")
    stream.flush()
    assert raw.getvalue() == b"one\n"


async def test_log_lines_are_flushed_once_per_event_loop_turn() -> None:
    raw = io.BytesIO()
    writer = _CountingWriter(raw)
    stream = logs.TurnFlushed(writer)
    for line in (b"one\n", b"two\n", b"three\n"):
        stream.write(line)
        stream.flush()
    assert raw.getvalue() == b""  # still in the buffer during this turn
    await asyncio.sleep(0)
    assert raw.getvalue() == b"one\ntwo\nthree\n"
    assert writer.flushes == 1


class _CountingRaw(io.RawIOBase):
    """An unbuffered stream (stdout's binary layer with PYTHONUNBUFFERED=1)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.flushes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.lines.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        self.flushes += 1


async def test_an_unbuffered_stream_gets_each_line_at_once_and_no_flush() -> None:
    raw = _CountingRaw()
    stream = logs.TurnFlushed(raw)
    for line in (b"one\n", b"two\n"):
        stream.line(line)
        stream.flush()
        assert raw.lines[-1] == line  # written during the turn
    await asyncio.sleep(0)
    assert raw.lines == [b"one\n", b"two\n"]
    assert raw.flushes == 0  # nothing was scheduled for the end of the turn
