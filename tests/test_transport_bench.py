"""bench/transport_bench.py runs (tiny sizes); its figures are printed by `make bench`, never
asserted. What is asserted: the calls it measures really succeeded, and a transport that cannot
carry gRPC (granian: no ASGI trailers) is reported as such rather than measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_transport_bench_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "bench/transport_bench.py",
            *("--rounds", "1", "--duration", "1", "--calls", "100"),
            *("--servers", "grpcio", "granian", "--work", str(tmp_path)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {tuple(line.split()[:2]): line.split() for line in result.stdout.splitlines()}
    grpc_load = rows[("grpcio", "grpc")]
    assert float(grpc_load[2]) > 0, grpc_load  # QPS
    assert grpc_load[-1] == "0", grpc_load  # failed
    for client in ("grpcio", "connect-grpc"):  # both clients' calls to grpc.aio succeeded
        assert rows[("grpcio", client)][-1] == "0", rows[("grpcio", client)]
    assert rows[("granian", "connect")][-1] == "0"  # connectrpc's Connect protocol works there
    assert "not measured: grpc on granian" in result.stdout
    assert "trailers" in result.stdout.split("not measured: grpc on granian")[1].splitlines()[0]
    checks = {
        line.split()[0]: line.split()[1]
        for line in result.stdout.split("compatibility")[1].splitlines()[1:]
        if line.startswith("  ")
    }
    assert checks["unary"] == checks["status-details"] == checks["bidi-full-duplex"] == "ok"
    assert len(checks) == 15
