"""Instructions per echo call, counted under valgrind: the whole server, every thread.

Timings on a shared 2-core machine drift by several percent from run to run; counted
instructions do not, so small changes to a server's hot path are compared this way. Each mode
of bench/echo_server.py runs under `valgrind --tool=cachegrind` twice, answering `--calls` and
`--base` echo calls from h2load (`-c2 -m5`, concurrency 10); the difference, divided by the
difference in calls, is what one call costs once the server has started.

Under load a Python instruction costs more than one of grpc's compiled code (the loaded
server's caches are shared), so these counts rank changes; bench/server_bench.py measures QPS.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from loads import (
    ECHO_PATH,
    HERE,
    echo_frame,
    echo_ready,
    echo_server_env,
    free_port,
    generate_echo,
    grpc_request,
    require_tools,
)

WORK = HERE / "_work" / "instructions"
DEFAULT_MODES = ("raw", "raw-uvloop", "keel", "keel-off")


def instructions(mode: str, calls: int, gen: Path, data: Path) -> int:
    """Instructions the echo server in `mode` executed from start to exit, answering `calls`."""
    port = free_port()
    env = echo_server_env(PYTHONHASHSEED="0")  # (the same hashing every run)
    with tempfile.NamedTemporaryFile("w+", suffix=".valgrind") as report:
        server = subprocess.Popen(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                "--cachegrind-out-file=/dev/null",
                f"--log-file={report.name}",
                sys.executable,
                str(HERE / "echo_server.py"),
                mode,
                str(port),
                str(gen),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            asyncio.run(echo_ready(port, timeout=300))
            subprocess.run(
                [
                    "h2load",
                    f"-n{calls}",
                    "-c2",
                    "-m5",
                    *grpc_request(data),
                    f"http://127.0.0.1:{port}{ECHO_PATH}",
                ],
                check=True,
                capture_output=True,
            )
        finally:
            server.terminate()
            server.wait(timeout=300)
        found = re.search(r"I\s+refs:\s+([\d,]+)", Path(report.name).read_text())
    if found is None:
        raise SystemExit(f"valgrind reported no instruction count for {mode}")
    return int(found[1].replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES))
    parser.add_argument("--calls", type=int, default=2400, help="calls in the longer run")
    parser.add_argument("--base", type=int, default=400, help="calls in the shorter run")
    args = parser.parse_args()
    if args.calls <= args.base:
        raise SystemExit("--calls must be more than --base")
    require_tools("valgrind", "h2load")
    WORK.mkdir(parents=True, exist_ok=True)
    gen = generate_echo(WORK)
    data = echo_frame(WORK)
    per_call: dict[str, float] = {}
    for mode in args.modes:
        more = instructions(mode, args.calls, gen, data)
        fewer = instructions(mode, args.base, gen, data)
        per_call[mode] = (more - fewer) / (args.calls - args.base)
    base = per_call.get("raw", per_call[args.modes[0]])
    print(
        f"echo unary, instructions per call under valgrind (all threads; {args.calls} calls less "
        f"{args.base}, h2load -c2 -m5)"
    )
    for mode, count in per_call.items():
        print(f"{mode:<26}{count:>12,.0f}{count / base:>8.2f}x")


if __name__ == "__main__":
    main()
