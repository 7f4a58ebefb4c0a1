"""REST through the gateway vs direct gRPC vs a hand-written FastAPI proxy, with a gRPC upstream.

This is the gateway's transcoding path (`--upstream grpc`: what it does for a service that does
not serve REST itself); bench/rest_bench.py measures its pass-through to REST in the service.
One raw grpc.aio echo server is the upstream of every proxy. Each proxy runs in its own
process on uvicorn (uvloop + httptools) and is loaded by wrk (Debian), a C program that is not
the bottleneck; direct gRPC is loaded by h2load. Every proxy is first checked with a real
request (200 and the echoed JSON), and wrk's non-2xx answers are counted as failures.

Targets: keel gateway QPS >= 1.3x the FastAPI proxy; at concurrency 1, the gateway's p50
exceeds direct gRPC's by < 1 ms; `--workers 2` for more cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from loads import (
    HERE,
    Load,
    cpu_seconds,
    echo_frame,
    echo_ready,
    free_port,
    generate_echo,
    h2load,
    require_tools,
    wrk,
)

WORK = HERE / "_work" / "gateway"
PROXIES = ("fastapi", "keel", "keel-2w")
POST_SCRIPT = """wrk.method = "POST"
wrk.body = '{"text":"hello, keel"}'
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass
class Row:
    proxy: str
    route: str
    load: Load
    c1_p50_ms: float
    cpu_us: float = float("nan")
    """CPU the proxy spent per request under load (µs)."""


def _start(proxy: str, port: int, upstream: int, gen: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    if proxy == "fastapi":
        command = [sys.executable, str(HERE / "fastapi_proxy.py"), str(port)]
        command += [f"127.0.0.1:{upstream}", str(gen)]
    else:
        command = [str(Path(sys.executable).parent / "keel"), "gateway", "--gen", str(gen)]
        command += ["--target", f"echo.v1.EchoService=127.0.0.1:{upstream}", "--port", str(port)]
        command += ["--upstream", "grpc"]
        if proxy == "keel-2w":
            command += ["--workers", "2"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _ready(port: int, timeout: float = 30) -> None:
    """Wait for a correct answer: 200 and the echoed text, by GET and by POST."""
    deadline = time.monotonic() + timeout
    base = f"http://127.0.0.1:{port}/v1/echo"
    while True:
        try:
            with urllib.request.urlopen(f"{base}/check", timeout=2) as answer:
                assert json.load(answer) == {"text": "check"}, "GET echoed wrongly"
            post = urllib.request.Request(
                base, data=b'{"text":"check"}', headers={"content-type": "application/json"}
            )
            with urllib.request.urlopen(post, timeout=2) as answer:
                assert json.load(answer) == {"text": "check"}, "POST echoed wrongly"
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def measure(proxy: str, upstream: int, gen: Path, script: Path, seconds: float) -> list[Row]:
    port = free_port()
    server = _start(proxy, port, upstream, gen)
    try:
        _ready(port)
        rows = []
        for route, url, body in (
            ("GET", f"http://127.0.0.1:{port}/v1/echo/hello", None),
            ("POST", f"http://127.0.0.1:{port}/v1/echo", script),
        ):
            wrk(url, 50, 1, body)  # warm-up
            began = cpu_seconds(server.pid)
            load = wrk(url, 50, seconds, body)
            cpu_us = (cpu_seconds(server.pid) - began) / max(1, load.ok + load.failed) * 1e6
            single = wrk(url, 1, max(1.0, seconds / 3), body)
            rows.append(Row(proxy, route, load, single.p50_ms, cpu_us))
        return rows
    finally:
        server.terminate()
        server.wait(timeout=30)


def _direct(upstream: int, data: Path, seconds: float) -> Row:
    load = h2load(upstream, data, clients=10, streams=5, seconds=seconds)
    single = h2load(upstream, data, clients=1, streams=1, seconds=max(1.0, seconds / 3))
    return Row("grpc-direct", "-", load, single.p50_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median kept)")
    parser.add_argument("--proxies", nargs="+", default=list(PROXIES), choices=PROXIES)
    args = parser.parse_args()
    require_tools("wrk", "h2load")
    WORK.mkdir(parents=True, exist_ok=True)
    gen = generate_echo(WORK)
    data = echo_frame(WORK)
    script = WORK / "post.lua"
    script.write_text(POST_SCRIPT)
    upstream = free_port()
    echo = subprocess.Popen(
        [sys.executable, str(HERE / "echo_server.py"), "raw", str(upstream), str(gen)],
        stdout=subprocess.DEVNULL,
    )
    try:
        asyncio.run(echo_ready(upstream))
        runs: dict[tuple[str, str], list[Row]] = {}
        direct: list[Row] = []
        for round_ in range(args.rounds):  # interleaved, so drift in the machine hits every proxy
            direct.append(_direct(upstream, data, args.duration))
            order = args.proxies if round_ % 2 == 0 else list(reversed(args.proxies))
            for proxy in order:
                for row in measure(proxy, upstream, gen, script, args.duration):
                    runs.setdefault((row.proxy, row.route), []).append(row)
    finally:
        echo.terminate()
        echo.wait(timeout=30)
    _report(args, direct, runs)


def _median(rows: list[Row]) -> Row:
    return sorted(rows, key=lambda r: r.load.qps)[len(rows) // 2]


def _report(
    args: argparse.Namespace, direct: list[Row], runs: dict[tuple[str, str], list[Row]]
) -> None:
    grpc_row = _median(direct)
    base_c1 = sorted(r.c1_p50_ms for r in direct)[len(direct) // 2]
    print(
        f"REST echo via a proxy to one raw grpc.aio upstream; wrk -t1 -c50, {args.duration:g} s, "
        f"median of {args.rounds} interleaved rounds; c1 = wrk -c1 (gRPC: h2load -c10 -m5 / -c1)"
    )
    print(
        f"{'proxy':<13}{'route':<6}{'QPS':>8}{'xFastAPI':>10}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'failed':>8}{'c1 p50':>8}{'c1 added':>10}{'CPU µs/req':>12}"
    )
    g = grpc_row.load
    print(
        f"{'grpc-direct':<13}{'-':<6}{g.qps:>8.0f}{'':>10}{g.p50_ms:>8.2f}{g.p99_ms:>8.2f}"
        f"{g.failed:>8}{base_c1:>8.2f}{'':>10}"
    )
    for (proxy, route), rows in runs.items():
        row = _median(rows)
        fastapi = runs.get(("fastapi", route))
        ratio = f"{row.load.qps / _median(fastapi).load.qps:.2f}x" if fastapi else "-"
        added = row.c1_p50_ms - base_c1
        print(
            f"{proxy:<13}{route:<6}{row.load.qps:>8.0f}{ratio:>10}{row.load.p50_ms:>8.2f}"
            f"{row.load.p99_ms:>8.2f}{row.load.failed:>8}{row.c1_p50_ms:>8.2f}{added:>9.2f}ms"
            f"{row.cpu_us:>12.0f}"
        )
    print("targets: keel >= 1.3x FastAPI QPS; keel c1 p50 added over direct gRPC < 1 ms")


if __name__ == "__main__":
    main()
