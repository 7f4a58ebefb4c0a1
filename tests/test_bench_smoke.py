"""The benchmarks run (tiny sizes); their figures are printed by `make bench`, never asserted."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def _run(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_gen_bench_runs() -> None:
    out = _run("bench/gen_bench.py", "--sizes", "3")
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["3"])
    keel_files, buf_files = map(int, row[-1].split("/"))
    assert keel_files == buf_files + 3 + 1  # one *_keel.py per file, plus the manifest


def test_message_bench_runs() -> None:
    out = _run("bench/message_bench.py", "--quick")
    assert "betterproto" in out
    assert "upb" in out
