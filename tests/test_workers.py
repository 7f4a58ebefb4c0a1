"""KEEL_WORKERS: several server processes on one port, metrics merged, clean stop."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import REPO, free_port
from tests.servers.kitchen_server import kitchen_keel, kitchen_pb2


async def _wait_until_serving(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health: Any = health_pb2_grpc.HealthStub(channel)  # stubs are typed for sync
                await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return
        except grpc.aio.AioRpcError:
            assert time.monotonic() < deadline, "workers did not start"
            await asyncio.sleep(0.1)


def _supervisor(
    port: int, metrics_port: int, *, folders: Path | None = None
) -> subprocess.Popen[bytes]:
    """The kitchen server as a supervisor of two workers (keeping its shared metrics folder in
    `folders` if given)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KEEL_")},
        "KEEL_PORT": str(port),
        "KEEL_HOST": "127.0.0.1",
        "KEEL_WORKERS": "2",
        "KEEL_METRICS_PORT": str(metrics_port),
        "KEEL_LOG_CALLS": "false",
        "KEEL_LOG_FORMAT": "json",
    }
    if folders is not None:
        env["TMPDIR"] = str(folders)
    return subprocess.Popen(
        [sys.executable, "tests/servers/kitchen_server.py"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # (its own process group: SIGKILL reaches its workers too)
    )


async def test_two_workers_share_a_port_and_merge_metrics() -> None:
    port, metrics_port = free_port(), free_port()
    process = _supervisor(port, metrics_port)
    try:
        await _wait_until_serving(port)
        pids: set[str] = set()
        calls = 0
        # Each new connection lands on one worker; the kernel spreads connections.
        while len(pids) < 2 and calls < 200:
            async with kitchen_keel.KitchenServiceClient.connect(f"127.0.0.1:{port}") as client:
                reply = await client.cook(
                    kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name="whoami"))
                )
            pids.add(reply.dish.name)
            calls += 1
        assert len(pids) == 2
        assert str(process.pid) not in pids  # the supervisor serves no calls
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        text = await asyncio.to_thread(lambda: direct.open(url, timeout=5).read().decode())
        cook = 'grpc_method="Cook",grpc_service="kitchen.v1.KitchenService",grpc_type="unary"'
        for sample in (
            f'grpc_server_handled_total{{grpc_code="OK",{cook}}}',
            f"grpc_server_started_total{{{cook}}}",
            f"grpc_server_handling_seconds_count{{{cook}}}",
        ):
            found = re.search(re.escape(sample) + r" (\S+)", text)
            assert found is not None, (sample, text[:2000])
            assert float(found.group(1)) == calls  # the sum over both workers, read live
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0


def test_workers_need_a_fixed_port() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KEEL_")},
        "KEEL_PORT": "0",
        "KEEL_WORKERS": "2",
    }
    result = subprocess.run(
        [sys.executable, "tests/servers/kitchen_server.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "KEEL_WORKERS > 1 needs a fixed port" in result.stderr


def _gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


async def test_a_killed_supervisors_metrics_folder_is_removed_by_the_next_one(
    tmp_path: Path,
) -> None:
    port = free_port()
    killed = _supervisor(port, free_port(), folders=tmp_path)
    try:
        await _wait_until_serving(port)
        [abandoned] = tmp_path.glob("keel-metrics-*")
        group = [
            killed.pid,
            *map(int, Path(f"/proc/{killed.pid}/task/{killed.pid}/children").read_text().split()),
        ]
    finally:
        os.killpg(killed.pid, signal.SIGKILL)  # no chance to clean up
        killed.wait(timeout=30)
    deadline = time.monotonic() + 30
    while not _gone(group):  # its workers too
        assert time.monotonic() < deadline, "the killed workers did not exit"
        await asyncio.sleep(0.05)
    assert abandoned.is_dir()
    second_port = free_port()
    second = _supervisor(second_port, free_port(), folders=tmp_path)
    third: subprocess.Popen[bytes] | None = None
    try:
        await _wait_until_serving(second_port)
        assert not abandoned.exists()
        [in_use] = tmp_path.glob("keel-metrics-*")
        third_port = free_port()
        third = _supervisor(third_port, free_port(), folders=tmp_path)
        await _wait_until_serving(third_port)
        assert in_use.is_dir()  # a live supervisor's folder is kept
        assert len(list(tmp_path.glob("keel-metrics-*"))) == 2
    finally:
        for process in (second, third):
            if process is not None:
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=30) == 0
    assert list(tmp_path.glob("keel-metrics-*")) == []  # each removed its own on the way out
