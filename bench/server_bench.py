"""Echo unary over loopback: keel.Server vs raw grpc.aio, loaded by h2load.

Server and load generator are separate processes; h2load (Debian's nghttp2-client) sends gRPC
frames for a fraction of a core, so the server is what is measured. Each row is measured in this
run; ratios are against `raw` (grpc.aio + servicer + health + reflection). h2load counts HTTP 200
only, so each server is first checked with a real gRPC call (grpc-status OK).

Every mode's server is started once and all stay up (idle but for the one under load); a round
loads each in turn for `--duration` seconds, in alternating order, so the machine's drift
(which on a shared 2-core host moves throughput by more than the servers differ) falls on
every mode alike, and many short rounds give a steadier median than a few long ones.

With --pin, each single-process server's event loop gets a core to itself, and its other
threads share the rest with h2load (loads.pin_event_loop): the loop is then never moved onto a
busy core, and a run varies less. By default the scheduler places every thread, as in the
figures docs/runtime.md compares over time. The workers modes are never pinned (they need
every core).

Targets: keel (logs + metrics + traces on) >= 1.0x raw QPS; keel-off >= 0.95x;
keel with 2 workers >= 1.5x; idle RSS <= 1.2x raw.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
    pin_event_loop,
    require_tools,
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
    """One load run (a round) against one server."""

    mode: str
    qps: float
    p50_ms: float
    p99_ms: float
    ok: int
    cpu_us: float
    """Server CPU (all its processes and threads) per call under load, µs."""
    loop_us: float
    """CPU of the server's main threads (each process's event loop) per call under load, µs:
    the loop thread is the busiest (about a core under load), so this bounds throughput."""
    server_cores: float
    """Cores the server kept busy under load."""
    h2load_cores: float
    """Cores the load generator used meanwhile (the machine's cores are shared)."""


@dataclass
class Running:
    """A started echo server, answering until `stop`."""

    mode: str
    port: int
    process: subprocess.Popen[bytes]
    rss_mib: float
    """Its resident memory once started, idle."""
    cores: frozenset[int] | None
    """The cores its load generator runs on (None: any)."""


def start(mode: str, gen: Path, *, pin: bool) -> Running:
    """Start bench/echo_server.py in `mode` and wait until it answers a real gRPC call."""
    port = free_port()
    env = echo_server_env()
    workers = mode.startswith("keel-workers")
    if workers:
        env["KEEL_WORKERS"] = "2"
    if mode == "keel-workers-on":  # as keel.serve runs by default: call logs and metrics on
        env.update({"KEEL_METRICS_PORT": str(free_port()), "KEEL_LOG_CALLS": "true"})
    with (WORK / f"{mode}.stderr").open("wb") as errors:
        server = subprocess.Popen(
            [sys.executable, str(HERE / "echo_server.py"), mode, str(port), str(gen)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    try:
        asyncio.run(echo_ready(port))
        time.sleep(0.5)
        cores = None
        if pin and not workers:
            cores = pin_event_loop(server.pid)
        return Running(mode, port, server, rss_mib(server.pid), cores)
    except BaseException:
        stop(server)
        raise


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(timeout=30)


def measure(server: Running, data: Path, seconds: float) -> Row:
    """One round: `seconds` of load at concurrency 50, and the server's CPU meanwhile."""
    pid = server.process.pid
    began, loop_began = cpu_seconds(pid), cpu_seconds(pid, main_threads=True)
    load = h2load(server.port, data, clients=10, streams=5, seconds=seconds, cores=server.cores)
    server_cpu = cpu_seconds(pid) - began
    loop_cpu = cpu_seconds(pid, main_threads=True) - loop_began
    return Row(
        server.mode,
        load.qps,
        load.p50_ms,
        load.p99_ms,
        load.ok,
        server_cpu / max(1, load.ok) * 1e6,
        loop_cpu / max(1, load.ok) * 1e6,
        server_cpu / load.seconds,
        load.generator_cpu_s / load.seconds,
    )


def single_p50_ms(server: Running, data: Path) -> float:
    """p50 latency of one call at a time (h2load -c1 -m1, 2 s)."""
    return h2load(server.port, data, clients=1, streams=1, seconds=2, cores=server.cores).p50_ms


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
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per load run")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="give each server's event loop a core to itself (two cores or more)",
    )
    args = parser.parse_args()
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("--pin needs two cores: one for the event loop, one for the rest")
    require_tools("h2load")
    WORK.mkdir(parents=True, exist_ok=True)
    gen = generate_echo(WORK)
    data = echo_frame(WORK)
    runs: dict[str, list[Row]] = {mode: [] for mode in args.modes}
    servers: dict[str, Running] = {}
    try:
        for mode in args.modes:  # all at once, idle but for the one under load
            servers[mode] = start(mode, gen, pin=args.pin)
        for round_ in range(args.rounds):  # interleaved: drift in the machine hits every mode
            order = args.modes if round_ % 2 == 0 else list(reversed(args.modes))
            for mode in order:
                runs[mode].append(measure(servers[mode], data, args.duration))
        single = {mode: single_p50_ms(server, data) for mode, server in servers.items()}
    finally:
        for server in servers.values():
            stop(server.process)
    rows = [sorted(runs[mode], key=lambda r: r.qps)[len(runs[mode]) // 2] for mode in args.modes]
    base_mode = "raw" if "raw" in runs else args.modes[0]
    # Each round's ratio is against raw in the same round, so the machine's drift cancels out.
    per_round = {
        mode: [run.qps / base.qps for run, base in zip(runs[mode], runs[base_mode], strict=True)]
        for mode in args.modes
    }
    ratios = {mode: statistics.median(per_round[mode]) for mode in args.modes}
    print(
        f"echo unary, h2load -c10 -m5 (concurrency 50), {args.duration:g} s, median of "
        f"{args.rounds} interleaved rounds (ratio: median of each round's ratio to "
        f"{base_mode}); "
        f"c1 = -c1 -m1; {os.cpu_count()} cores shared by server and h2load"
        + (", each event loop pinned to a core of its own" if args.pin else ", unpinned")
    )
    print(
        f"{'server':<26}{'QPS':>9}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}{'c1 p50':>9}"
        f"{'RSS MiB':>9}{'RSS ratio':>10}{'CPU µs/call':>12}{'loop µs':>8}{'cores':>7}"
        f"{'h2load':>8}"
    )
    for r in rows:
        print(
            f"{r.mode:<26}{r.qps:>9.0f}{ratios[r.mode]:>7.2f}x{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
            f"{single[r.mode]:>9.2f}{servers[r.mode].rss_mib:>9.1f}"
            f"{servers[r.mode].rss_mib / servers[base_mode].rss_mib:>9.2f}x"
            f"{r.cpu_us:>12.0f}{r.loop_us:>8.0f}{r.server_cores:>7.2f}{r.h2load_cores:>8.2f}"
        )
    print(f"each round's ratio to {base_mode} (in round order; the machine drifts between rounds):")
    for mode in args.modes:
        print(f"  {mode:<24}" + " ".join(f"{ratio:.2f}" for ratio in per_round[mode]))
    print("each round's event-loop CPU µs per call (steadier than QPS on a shared machine):")
    for mode in args.modes:
        loop_us = [run.loop_us for run in runs[mode]]
        print(
            f"  {mode:<24}"
            + " ".join(f"{us:.0f}" for us in loop_us)
            + f"  (median {statistics.median(loop_us):.0f})"
        )
    print("targets: keel >= 1.0x, keel-off >= 0.95x, keel-workers (2) >= 1.5x, RSS <= 1.2x")
    stub_us, keel_us = asyncio.run(_client_overhead(gen, 2000))
    print(
        f"client, sequential calls to the raw server: grpcio stub p50 {stub_us:.0f} µs, "
        f"generated Keel client p50 {keel_us:.0f} µs ({keel_us / stub_us:.2f}x)"
    )


if __name__ == "__main__":
    main()
