"""bench/rest_bench.py runs (one short round); its figures are printed by `make bench`, never
asserted here."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench does)")
def test_rest_bench_runs_and_every_request_succeeds() -> None:
    command = ["bench/rest_bench.py", "--duration", "1", "--rounds", "1", "--paths", "service"]
    done = subprocess.run(
        [sys.executable, *command, "bare"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [
        line.split() for line in done.stdout.splitlines()[2:] if line.split()[:1] != ["targets:"]
    ]
    assert {(row[0], row[1]) for row in rows} == {
        ("service", "GET"),
        ("service", "POST"),
        ("bare", "GET"),
        ("bare", "POST"),
    }
    assert all(int(row[6]) == 0 for row in rows), done.stdout  # no failed requests
