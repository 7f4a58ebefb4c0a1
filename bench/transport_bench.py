"""Unary echo over grpc.aio and over connectrpc (gRPC and Connect protocols) on ASGI servers.

One run, interleaved rounds. In each round every server is started once and measured with:
- clients (bench/transport_client.py, one process each, CALLS calls 20 at a time): grpc.aio's
  client, connectrpc's client speaking gRPC, and connectrpc's client speaking Connect (binary
  proto). Each reports its own CPU per call; the server's CPU over the same calls is read from
  /proc (all its processes and threads). A client whose calls fail marks that protocol as
  broken on that server, with the error, and its load run is skipped.
- h2load (-c10 -m5, gRPC frames or Connect's binary POST; --h1 for uvicorn): QPS, p50/p99 and
  server CPU per call, a C load generator using a fraction of a core.
Then, on the first round's servers, transport_checks.py's compatibility checks (grpcio client).

The machine has 2 cores shared with other work: QPS moves with it, CPU per call much less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import transport_servers as servers
from loads import HERE, free_port, percentile, require_tools

WORK = HERE / "_work" / "transport"
ECHO = "/echo.v1.EchoService/Echo"
PROTOCOLS = {
    "grpcio": ("grpc",),
    "hypercorn": ("grpc", "connect"),
    "granian": ("grpc", "connect"),
    "pyvoy": ("grpc", "connect"),
    "uvicorn": ("connect-h1",),
}
"""What each server is loaded with by h2load."""
CLIENTS = {
    "grpcio": ("grpcio", "connect-grpc"),
    "hypercorn": ("grpcio", "connect-grpc", "connect"),
    "granian": ("grpcio", "connect-grpc", "connect"),
    "pyvoy": ("grpcio", "connect-grpc", "connect"),
    "uvicorn": ("connect-h1",),
}
"""Which clients call each server (grpcio speaks no Connect; uvicorn no HTTP/2)."""
SPEAKS = {
    "grpcio": "grpc",
    "connect-grpc": "grpc",
    "connect": "connect",
    "connect-h1": "connect-h1",
}


@dataclass
class Figures:
    """One measurement: a load run or a client run."""

    ok: int
    failed: int
    server_us: float
    qps: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    client_us: float = float("nan")
    error: str = ""


@dataclass
class Runs:
    by_key: dict[tuple[str, str, str], list[Figures]] = field(
        default_factory=lambda: defaultdict(list)
    )
    broken: dict[tuple[str, str], str] = field(default_factory=dict)
    checks: dict[str, dict[str, str]] = field(default_factory=dict)


def h2load(port: int, protocol: str, data: dict[str, Path], seconds: float) -> Figures:
    """h2load's load on the echo; non-200 answers, resets and timeouts count as failed."""
    log = data[protocol].parent / f"h2load-{port}.tsv"
    headers = {
        "grpc": ["content-type: application/grpc", "te: trailers"],
        "connect": ["content-type: application/proto"],
        "connect-h1": ["content-type: application/proto"],
    }[protocol]
    shape = ["--h1", "-c50", "-m1"] if protocol == "connect-h1" else ["-c10", "-m5"]
    command = ["h2load", *shape, f"-D{max(1, round(seconds))}", "-d", str(data[protocol])]
    for header in headers:
        command += ["-H", header]
    command += [f"--log-file={log}", f"http://127.0.0.1:{port}{ECHO}"]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
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
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done", result.stdout)
    if done:  # answers without a status (reset streams) are not in the log
        failed = max(failed, int(done[1]) - len(latencies))
    return Figures(
        len(latencies),
        failed,
        0.0,
        float(found[1]),
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
    )


def client_run(client: str, port: int, gen: Path, calls: int) -> Figures:
    command = [sys.executable, str(HERE / "transport_client.py"), client, str(port), str(gen)]
    try:
        out = subprocess.run(
            [*command, str(calls), "20"], capture_output=True, text=True, timeout=120, check=False
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, IndexError, json.JSONDecodeError) as error:
        return Figures(0, 1, float("nan"), error=f"client died: {error}"[:300])
    ok = result["calls"]
    return Figures(
        ok,
        result["failures"],
        float("nan"),
        ok / result["seconds"] if ok else float("nan"),
        result.get("p50_ms", float("nan")),
        result.get("p99_ms", float("nan")),
        result["cpu_s"] / ok * 1e6 if ok else float("nan"),
        result.get("error", ""),
    )


def measure_server(
    name: str, gen: Path, data: dict[str, Path], args: argparse.Namespace, runs: Runs
) -> None:
    """Connect protocol first, then the checks (first round only), then gRPC: a server that
    breaks under gRPC calls (pyvoy does) still has its Connect figures."""
    port = free_port()
    process = servers.start(name, port, gen)
    try:
        servers.wait_port(port, process)
        time.sleep(0.3)  # the server's start-up work out of the figures
        for speaks in ("connect", "connect-h1", "checks", "grpc"):
            if speaks == "checks":
                if args.checks and name not in runs.checks and name in servers.HTTP2:
                    from transport_checks import run_checks  # noqa: PLC0415 (generated code)

                    runs.checks[name] = asyncio.run(run_checks(port))
                continue
            for client in (c for c in CLIENTS[name] if SPEAKS[c] == speaks):
                began = servers.tree_cpu(process.pid)
                figures = client_run(client, port, gen, args.calls)
                used = servers.tree_cpu(process.pid) - began
                figures.server_us = used / figures.ok * 1e6 if figures.ok else float("nan")
                runs.by_key[(name, client, "client")].append(figures)
                if figures.ok < 0.9 * args.calls:
                    runs.broken.setdefault((name, speaks), figures.error)
            if speaks in PROTOCOLS[name] and (name, speaks) not in runs.broken:
                began = servers.tree_cpu(process.pid)
                figures = h2load(port, speaks, data, args.duration)
                used = servers.tree_cpu(process.pid) - began
                figures.server_us = used / max(1, figures.ok) * 1e6
                runs.by_key[(name, speaks, "load")].append(figures)
    finally:
        servers.stop(process)


def _median(values: list[float]) -> float:
    kept = [v for v in values if v == v]  # noqa: PLR0124 (drops NaN)
    return statistics.median(kept) if kept else float("nan")


def _short(text: str, width: int = 150) -> str:
    return " ".join(text.split())[:width]


def _row(cells: list[tuple[object, str]]) -> str:
    return "".join(format(value, spec) for value, spec in cells)


def report(runs: Runs, args: argparse.Namespace) -> None:
    print(
        f"echo unary, {args.rounds} interleaved rounds, medians; h2load -c10 -m5 (uvicorn: --h1 "
        f"-c50) {args.duration:g} s; clients: {args.calls} calls, 20 at a time; CPU per call "
        "from /proc (server: all its processes and threads; client: its own process)"
    )
    heads = ("server", "load", "QPS", "p50 ms", "p99 ms", "server µs", "failed")
    print(_row(list(zip(heads, ("<11", "<12", ">8", ">8", ">8", ">10", ">8"), strict=True))))
    for (name, what, kind), figures in runs.by_key.items():
        if kind == "load":
            median = {k: _median([getattr(f, k) for f in figures]) for k in vars(figures[0])}
            failed = sum(f.failed for f in figures)
            cells = [(name, "<11"), (what, "<12"), (median["qps"], ">8.0f")]
            cells += [(median["p50_ms"], ">8.2f"), (median["p99_ms"], ">8.2f")]
            print(_row([*cells, (median["server_us"], ">10.0f"), (failed, ">8")]))
    heads = ("server", "client", "calls/s", "p50 ms", "client µs", "server µs", "failed")
    print(_row(list(zip(heads, ("<11", "<14", ">8", ">8", ">10", ">10", ">8"), strict=True))))
    for (name, what, kind), figures in runs.by_key.items():
        if kind == "client":
            median = {k: _median([getattr(f, k) for f in figures]) for k in vars(figures[0])}
            failed = sum(f.failed for f in figures)
            cells = [(name, "<11"), (what, "<14"), (median["qps"], ">8.0f")]
            cells += [(median["p50_ms"], ">8.2f"), (median["client_us"], ">10.0f")]
            cells += [(median["server_us"], ">10.0f"), (failed, ">8")]
            error = next((f.error for f in figures if f.error), "")
            print(_row(cells) + (f"  {_short(error, 110)}" if failed else ""))
    for (name, speaks), error in runs.broken.items():
        print(f"not measured: {speaks} on {name}: {_short(error)}")
    if runs.checks:
        names = list(runs.checks)
        print("compatibility, grpcio client over gRPC: " + " | ".join(names))
        for check in next(iter(runs.checks.values())):
            outcomes = [runs.checks[n][check] for n in names]
            print(f"  {check:<24}" + " | ".join(_short(c, 90) for c in outcomes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per h2load run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=600, help="calls per client run")
    parser.add_argument(
        "--servers", nargs="+", default=list(servers.SERVERS), choices=servers.SERVERS
    )
    parser.add_argument("--no-checks", dest="checks", action="store_false")
    parser.add_argument("--work", type=Path, default=WORK, help="folder for generated code")
    args = parser.parse_args()
    require_tools("h2load")
    args.work.mkdir(parents=True, exist_ok=True)
    gen = servers.generate(args.work)
    sys.path.insert(0, str(gen))
    from echo.v1 import echo_pb2  # noqa: PLC0415

    message = echo_pb2.EchoRequest(text="hello, keel").SerializeToString()
    data = {"grpc": args.work / "request.grpc", "connect": args.work / "request.proto"}
    data["grpc"].write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    data["connect"].write_bytes(message)
    data["connect-h1"] = data["connect"]
    runs = Runs()
    began, load = time.monotonic(), os.getloadavg()[0]
    for round_ in range(args.rounds):  # interleaved: the machine's drift hits every server
        order = args.servers if round_ % 2 == 0 else list(reversed(args.servers))
        for name in order:
            measure_server(name, gen, data, args, runs)
    report(runs, args)
    print(
        f"took {time.monotonic() - began:.0f} s; load average {load:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after ({os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
