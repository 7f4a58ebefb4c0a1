"""The events benchmark runs (tiny sizes); `make bench` prints its figures, never asserted."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_events_bench_runs() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "bench/events_bench.py",
            "--events",
            "50",
            "--rounds",
            "1",
            "--databases",
            "sqlite",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    modes = [line.split()[0] for line in result.stdout.splitlines() if line[:1].islower()]
    assert {"raw", "raw+db", "keel", "outbox", "relay", "inbox", "commit"} <= set(modes)
    assert "sqlite: keel" in result.stdout
    assert "ratio keel/raw events/s:" in result.stdout
    assert "per event, each stage alone (wall/event-loop CPU): producer commit" in result.stdout
