"""Shared parts of the load benchmarks: the echo workspace, free ports and two load generators.

h2load (Debian's nghttp2-client) sends gRPC frames and wrk sends HTTP/1.1; both are C programs
that use a fraction of a core, so the server under test is what is measured.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shutil
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc.aio

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
ECHO_PATH = "/echo.v1.EchoService/Echo"


PACKAGES = {"h2load": "nghttp2-client", "wrk": "wrk", "valgrind": "valgrind"}
"""The Debian package of each tool the benchmarks run (`make bench` installs them)."""


def require_tools(*tools: str) -> None:
    """Exit with what to install if any of `tools` (keys of PACKAGES) is not on PATH."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        packages = " ".join(PACKAGES[tool] for tool in missing)
        raise SystemExit(
            f"{', '.join(missing)} not found: apt-get install {packages} (make bench does)"
        )


@dataclass
class Load:
    """What one load run measured: requests a second, latencies and how many succeeded."""

    qps: float
    p50_ms: float
    p99_ms: float
    ok: int
    failed: int
    seconds: float = 0.0
    """Wall time of the run."""
    generator_cpu_s: float = 0.0
    """CPU the load generator itself used (it shares the machine with the server)."""


def echo_server_env(**extra: str) -> dict[str, str]:
    """The environment bench/echo_server.py runs in: this one without KEEL_ settings, then the
    benchmarks' own (no metrics port, loopback, no call lines unless the mode turns them on)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update({"KEEL_METRICS_PORT": "0", "KEEL_HOST": "127.0.0.1", "KEEL_LOG_CALLS": "false"})
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pin_event_loop(pid: int) -> frozenset[int]:
    """Give the event loop (main thread) of server process `pid` the first of this process's
    cores to itself and its other threads (grpc's) the rest, and return the rest: the cores for
    the load generator (h2load's `cores`).

    On two cores the scheduler otherwise moves the busy loop thread onto the load generator's or
    grpc's core at times, which changes a run's throughput by more than the servers differ.
    grpc starts its threads before the first call is answered, so every one exists by the time
    the server is ready.
    """
    first, *rest = sorted(os.sched_getaffinity(0))
    shared = frozenset(rest)
    for thread in Path(f"/proc/{pid}/task").iterdir():
        tid = int(thread.name)
        os.sched_setaffinity(tid, {first} if tid == pid else shared)
    return shared


def process_tree(pid: int) -> list[int]:
    """A process and its direct children (a supervisor and its workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(p) for p in children.read_text().split())] if children.exists() else [pid]


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children, MiB."""
    total = 0
    for each in process_tree(pid):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def cpu_seconds(pid: int, *, main_threads: bool = False) -> float:
    """User + system CPU of a process and its children so far (from /proc); `main_threads`:
    of each one's main thread only (a server's event loop)."""
    total = 0
    for each in process_tree(pid):
        stat = f"/proc/{each}/task/{each}/stat" if main_threads else f"/proc/{each}/stat"
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


def generate_echo(work: Path) -> Path:
    """`keel gen` over bench/proto into `work`/gen, which goes on sys.path."""
    gen = work / "gen"
    subprocess.run(
        [str(BIN / "keel"), "gen", "--workspace", str(HERE / "proto"), "--out", str(gen)],
        check=True,
        capture_output=True,
    )
    if str(gen) not in sys.path:
        sys.path.insert(0, str(gen))
    return gen


def echo_frame(work: Path, text: str = "hello, keel") -> Path:
    """A file holding one gRPC frame of an EchoRequest, for h2load's -d."""
    from echo.v1 import echo_pb2  # noqa: PLC0415

    message = echo_pb2.EchoRequest(text=text).SerializeToString()
    data = work / "request.bin"
    data.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
    return data


async def echo_ready(port: int, timeout: float = 30) -> None:
    """Wait until an echo server on `port` answers a real gRPC call correctly (a plain grpc.aio
    channel: a Keel client's breaker would open on a server slow to start on a loaded machine)."""
    from echo.v1 import echo_pb2, echo_pb2_grpc  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while True:
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = echo_pb2_grpc.EchoServiceStub(channel)
                reply = await stub.Echo(echo_pb2.EchoRequest(text="check"), timeout=2)
                assert reply.text == "check", "echo answered wrongly"
                return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def grpc_request(data: Path) -> list[str]:
    """h2load's options for a gRPC request whose frame is in `data`."""
    return ["-d", str(data), "-H", "content-type: application/grpc", "-H", "te: trailers"]


def h2load(
    port: int,
    data: Path,
    *,
    clients: int,
    streams: int,
    seconds: float,
    cores: frozenset[int] | None = None,
) -> Load:
    """gRPC unary echo calls (on `cores` if given); h2load counts HTTP 200 only, so check
    grpc-status elsewhere."""
    log = data.parent / f"h2load-{port}-{clients}.tsv"
    before, began = _children_cpu(), time.perf_counter()
    result = subprocess.run(
        [
            "h2load",
            f"-c{clients}",
            f"-m{streams}",
            f"-D{max(1, round(seconds))}",
            *grpc_request(data),
            f"--log-file={log}",
            f"http://127.0.0.1:{port}{ECHO_PATH}",
        ],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=None if cores is None else lambda: os.sched_setaffinity(0, cores),
    )
    wall, generator_cpu = time.perf_counter() - began, _children_cpu() - before
    found = re.search(r"finished in [^,]+, ([\d.]+) req/s", result.stdout)
    assert found, result.stdout
    latencies, failed = [], 0
    for line in log.read_text().splitlines():
        _, status, micros = line.split("\t")[:3]
        if status == "200":
            latencies.append(int(micros) / 1000)
        else:
            failed += 1
    log.unlink()
    return Load(
        float(found[1]),
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        len(latencies),
        failed,
        wall,
        generator_cpu,
    )


def _children_cpu() -> float:
    """User + system CPU of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNIT_MS[unit]


def wrk(url: str, connections: int, seconds: float, script: Path | None = None) -> Load:
    """HTTP/1.1 load from wrk (one thread); non-2xx answers and socket errors count as failed."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    result = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    out = result.stdout
    qps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"\s50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"\s99%\s+([\d.]+\w+)", out)
    if not (qps and total and p50 and p99):
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    failed = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        failed += sum(int(n) for n in errors.groups())
    return Load(float(qps[1]), _ms(p50[1]), _ms(p99[1]), int(total[1]) - failed, failed)
