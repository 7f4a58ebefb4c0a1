"""Echo unary over loopback: keel.Server vs raw grpc.aio, loaded by h2load.

Server and load generator are separate processes; h2load (Debian's nghttp2-client) sends gRPC
frames for a fraction of a core, so the server is what is measured. Each row is measured in this
run; ratios are against `raw` (grpc.aio + servicer + health + reflection). h2load counts HTTP 200
only, so each server is first checked with a real gRPC call (grpc-status OK).

Targets: keel (logs + metrics + traces on) >= 0.85x raw QPS; keel-off >= 0.95x;
keel with 2 workers >= 1.5x; idle RSS <= 1.2x raw.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio
from loads import (
    HERE,
    cpu_seconds,
    echo_frame,
    echo_ready,
    echo_server_env,
    free_port,
    generate_echo,
    h2load,
    rss_mib,
)

WORK = HERE / "_work" / "server"
MODES = (
    "raw",
    "raw-uvloop",
    "keel",
    "keel-off",
    "keel-workers",
    "keel-workers-on",
    "keel-logs",
    "keel-metrics",
    "keel-traces",
    "keel-all-sampled",
    "keel-traces-all-sampled",
    "keel-unlimited",
)


@dataclass
class Row:
    mode: str
    qps: float
    p50_ms: float
    p99_ms: float
    ok: int
    c1_p50_ms: float
    rss_mib: float
    cpu_us: float
    """Server CPU (all its processes and threads) per call under load, µs."""
    loop_us: float
    """CPU of the server's main threads (each process's event loop) per call under load, µs:
    the loop thread is the busiest (about a core under load), so this bounds throughput."""
    server_cores: float
    """Cores the server kept busy under load."""
    h2load_cores: float
    """Cores the load generator used meanwhile (the machine's cores are shared)."""


def measure(mode: str, gen: Path, data: Path, seconds: float) -> Row:
    port = free_port()
    env = echo_server_env()
    if mode.startswith("keel-workers"):
        env["KEEL_WORKERS"] = "2"
    if mode == "keel-workers-on":  # as keel.serve runs by default: call logs and metrics on
        env.update({"KEEL_METRICS_PORT": str(free_port()), "KEEL_LOG_CALLS": "true"})
    server = subprocess.Popen(
        [sys.executable, str(HERE / "echo_server.py"), mode, str(port), str(gen)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        asyncio.run(echo_ready(port))
        time.sleep(0.5)
        rss = rss_mib(server.pid)
        began, loop_began = cpu_seconds(server.pid), cpu_seconds(server.pid, main_threads=True)
        load = h2load(port, data, clients=10, streams=5, seconds=seconds)
        server_cpu = cpu_seconds(server.pid) - began
        loop_cpu = cpu_seconds(server.pid, main_threads=True) - loop_began
        single = h2load(port, data, clients=1, streams=1, seconds=max(1.0, seconds / 3))
        return Row(
            mode,
            load.qps,
            load.p50_ms,
            load.p99_ms,
            load.ok,
            single.p50_ms,
            rss,
            server_cpu / max(1, load.ok) * 1e6,
            loop_cpu / max(1, load.ok) * 1e6,
            server_cpu / load.seconds,
            load.generator_cpu_s / load.seconds,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


async def _client_overhead(gen: Path, calls: int) -> tuple[float, float]:
    """p50 µs of sequential calls to a raw server: grpcio stub vs generated Keel client."""
    from echo.v1 import echo_keel, echo_pb2, echo_pb2_grpc  # noqa: PLC0415

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(HERE / "echo_server.py"), "raw", str(port), str(gen)],
        stdout=subprocess.DEVNULL,
    )
    try:
        await echo_ready(port)
        request = echo_pb2.EchoRequest(text="hello, keel")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub: Any = echo_pb2_grpc.EchoServiceStub(channel)
            client = echo_keel.EchoServiceClient(channel)
            timings: dict[str, list[float]] = {"stub": [], "keel": []}
            for _ in range(calls):
                for name, call in (("stub", stub.Echo), ("keel", client.echo)):
                    began = time.perf_counter()
                    await call(request, timeout=5)
                    timings[name].append((time.perf_counter() - began) * 1e6)
        return statistics.median(timings["stub"]), statistics.median(timings["keel"])
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median kept)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not found: apt-get install nghttp2-client (make bench does)")
    WORK.mkdir(parents=True, exist_ok=True)
    gen = generate_echo(WORK)
    data = echo_frame(WORK)
    runs: dict[str, list[Row]] = {mode: [] for mode in args.modes}
    for round_ in range(args.rounds):  # interleaved, so drift in the machine hits every mode
        order = args.modes if round_ % 2 == 0 else list(reversed(args.modes))
        for mode in order:
            runs[mode].append(measure(mode, gen, data, args.duration))
    rows = [sorted(runs[mode], key=lambda r: r.qps)[len(runs[mode]) // 2] for mode in args.modes]
    base_mode = "raw" if "raw" in runs else args.modes[0]
    # Each round's ratio is against raw in the same round, so the machine's drift cancels out.
    per_round = {
        mode: [run.qps / base.qps for run, base in zip(runs[mode], runs[base_mode], strict=True)]
        for mode in args.modes
    }
    ratios = {mode: statistics.median(per_round[mode]) for mode in args.modes}
    base = next(r for r in rows if r.mode == base_mode)
    print(
        f"echo unary, h2load -c10 -m5 (concurrency 50), {args.duration:g} s, median of "
        f"{args.rounds} interleaved rounds (ratio: median of each round's ratio to "
        f"{base_mode}); "
        f"c1 = -c1 -m1; {os.cpu_count()} cores shared by server and h2load"
    )
    print(
        f"{'server':<26}{'QPS':>9}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}{'c1 p50':>9}"
        f"{'RSS MiB':>9}{'RSS ratio':>10}{'CPU µs/call':>12}{'loop µs':>8}{'cores':>7}"
        f"{'h2load':>8}"
    )
    for r in rows:
        print(
            f"{r.mode:<26}{r.qps:>9.0f}{ratios[r.mode]:>7.2f}x{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
            f"{r.c1_p50_ms:>9.2f}{r.rss_mib:>9.1f}{r.rss_mib / base.rss_mib:>9.2f}x"
            f"{r.cpu_us:>12.0f}{r.loop_us:>8.0f}{r.server_cores:>7.2f}{r.h2load_cores:>8.2f}"
        )
    print(f"each round's ratio to {base_mode} (in round order; the machine drifts between rounds):")
    for mode in args.modes:
        print(f"  {mode:<24}" + " ".join(f"{ratio:.2f}" for ratio in per_round[mode]))
    print("each round's event-loop CPU µs per call (steadier than QPS on a shared machine):")
    for mode in args.modes:
        print(f"  {mode:<24}" + " ".join(f"{run.loop_us:.0f}" for run in runs[mode]))
    print("targets: keel >= 0.85x, keel-off >= 0.95x, keel-workers (2) >= 1.5x, RSS <= 1.2x")
    stub_us, keel_us = asyncio.run(_client_overhead(gen, 2000))
    print(
        f"client, sequential calls to the raw server: grpcio stub p50 {stub_us:.0f} µs, "
        f"generated Keel client p50 {keel_us:.0f} µs ({keel_us / stub_us:.2f}x)"
    )


if __name__ == "__main__":
    main()
