"""The servers bench/transport_bench.py compares: how each is generated, started and measured.

`grpcio` is Keel's transport today (grpc.aio on uvloop); the others serve transport_app.py's
connectrpc ASGI app with an ASGI server: hypercorn (h2), granian (Rust, h2), pyvoy (Envoy,
connectrpc's recommended server) and uvicorn (HTTP/1.1 only: the Connect protocol, never gRPC).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from loads import BIN, HERE, generate_echo

ASGI = "transport_app:app"
HYPERCORN_CONFIG = "keep_alive_max_requests = 1000000000\n"
"""hypercorn closes an HTTP/2 connection after 1000 requests by default (keep_alive_max_requests),
failing the calls in flight on it (grpcio: UNAVAILABLE, GOAWAY): this lifts the limit."""


def _asgi(port: int, work: Path) -> dict[str, list[str]]:
    where = ["127.0.0.1", str(port)]
    return {
        "hypercorn": [
            str(BIN / "hypercorn"),
            "--config",
            str(work / "hypercorn.toml"),
            "--bind",
            ":".join(where),
            "--worker-class",
            "uvloop",
            "--workers",
            "1",
            ASGI,
        ],
        "granian": [
            str(BIN / "granian"),
            "--interface",
            "asgi",
            "--http",
            "2",
            "--loop",
            "uvloop",
            "--workers",
            "1",
            "--host",
            where[0],
            "--port",
            where[1],
            "--no-ws",
            ASGI,
        ],
        "pyvoy": [
            str(BIN / "pyvoy"),
            "--address",
            where[0],
            "--port",
            where[1],
            "--loop",
            "uvloop",
            "--log-level",
            "error",
            "transport_app:pyvoy_app",
        ],
        "uvicorn": [
            str(BIN / "uvicorn"),
            "--host",
            where[0],
            "--port",
            where[1],
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            ASGI,
        ],
    }


SERVERS = ("grpcio", "hypercorn", "granian", "pyvoy", "uvicorn")
"""Every server; uvicorn speaks HTTP/1.1 only."""
HTTP2 = ("grpcio", "hypercorn", "granian", "pyvoy")


def generate(work: Path) -> Path:
    """grpcio's and Keel's code (keel gen) plus connectrpc's (*_connect.py) for bench/proto."""
    gen = generate_echo(work)
    (work / "hypercorn.toml").write_text(HYPERCORN_CONFIG)
    import google.api  # noqa: PLC0415 (its .proto files: google/api/annotations.proto)

    include = Path(next(iter(google.api.__path__))).parents[1]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{HERE / 'proto'}",
            f"-I{include}",
            f"--plugin=protoc-gen-connectrpc={BIN / 'protoc-gen-connectrpc'}",
            f"--connectrpc_out={gen}",
            "--connectrpc_opt=protobuf=google",
            "echo/v1/echo.proto",
            "echo/v1/probe.proto",
        ],
        check=True,
        capture_output=True,
    )
    return gen


def start(server: str, port: int, gen: Path) -> subprocess.Popen[bytes]:
    """Start `server` on 127.0.0.1:`port` with the code `generate` made in `gen` (its
    readiness is the caller's check)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(gen)]))
    if server == "grpcio":
        command = [sys.executable, str(HERE / "transport_grpcio.py"), str(port), str(gen)]
    else:
        command = _asgi(port, gen.parent)[server]
    return subprocess.Popen(
        command, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def descendants(pid: int) -> list[int]:
    """A process and all its descendants (workers of workers), from /proc."""
    found, queue = [], [pid]
    while queue:
        each = queue.pop()
        found.append(each)
        try:
            for task in Path(f"/proc/{each}/task").iterdir():
                queue += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process tree so far (all threads, from /proc)."""
    total = 0
    for each in descendants(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until something accepts on `port` (or the server died, or the deadline passed)."""
    import socket  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"server exited {process.returncode}: {error[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
