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


def _row(out: str, mode: str) -> list[str]:
    """A mode's row of a benchmark's table (its first unindented line)."""
    return next(line.split() for line in out.splitlines() if line.startswith(f"{mode} "))


def test_server_bench_runs() -> None:
    out = _run(
        "bench/server_bench.py", "--modes", "raw", "keel", "--duration", "1", "--rounds", "1"
    )
    raw, keel = _row(out, "raw"), _row(out, "keel")
    assert float(raw[1]) > 0
    assert raw[2] == "1.00x"
    assert float(keel[1]) > 0


def test_server_bench_pins_each_event_loop_to_a_core_of_its_own() -> None:
    out = _run(
        "bench/server_bench.py", "--modes", "raw", "--duration", "1", "--rounds", "1", "--pin"
    )
    assert "each event loop pinned to a core of its own" in out.splitlines()[0]
    assert float(_row(out, "raw")[1]) > 0


def test_server_instructions_runs() -> None:
    out = _run(
        "bench/server_instructions.py", "--modes", "keel-off", "--calls", "40", "--base", "20"
    )
    row = _row(out, "keel-off")
    assert float(row[1].replace(",", "")) > 0
    assert row[2] == "1.00x"  # (the only mode is its own base)


def test_load_benchmarks_name_the_package_of_a_missing_load_generator() -> None:
    wanted = {
        "bench/server_bench.py": "nghttp2-client",
        "bench/server_instructions.py": "valgrind",
        "bench/gateway_bench.py": "wrk",
        "bench/rest_bench.py": "wrk",
        "bench/transport_bench.py": "nghttp2-client",
    }
    for script, package in wanted.items():
        result = subprocess.run(
            [sys.executable, script],
            cwd=REPO,
            env={"PATH": "/nonexistent"},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 1, (script, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert "not found: apt-get install" in last, (script, last)
        assert package in last, (script, last)
        assert "Traceback" not in result.stderr, script
