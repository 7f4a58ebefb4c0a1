"""REST echo served in the service vs through the gateway vs a FastAPI proxy vs a bare ASGI app.

Paths, each loaded by wrk (-t1 -c50, GET /v1/echo/hello and POST /v1/echo), in interleaved
rounds; CPU per request is summed over every server process of the path (from /proc):

- `service`: `keel.Server(rest_port=...)`, REST in the service's own process (logs and metrics
  on, as `keel.serve` runs by default), no gRPC hop.
- `service-off`: the same with its per-request line and metrics off.
- `bare`: the limit: an ASGI app on the same uvicorn (uvloop, httptools) that transcodes with
  json_format and calls the handler directly; no routing table, checks, logs or metrics.
- `gateway`: `keel gateway` passing requests through to REST in the service (the `service`
  path's port, `--rest-target`; what it does when a service serves REST itself), CPU: the
  gateway and the service.
- `gateway-grpc`: `keel gateway --upstream grpc` → a raw grpc.aio echo service (transcoding;
  what it does for a service without a REST port), CPU: both processes.
- `fastapi`: bench/fastapi_proxy.py → the same raw service (CPU: both processes).

Targets: `service` >= 5x `fastapi`'s QPS and within 1.5x of `bare`'s CPU per request;
`gateway` >= 1.5x `fastapi`'s QPS.
`python bench/rest_bench.py --serve MODE PORT GEN [UPSTREAM]` runs one server (internal).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loads import (
    BIN,
    HERE,
    Load,
    cpu_seconds,
    echo_ready,
    free_port,
    generate_echo,
    require_tools,
    wrk,
)

WORK = HERE / "_work" / "rest"
PATHS = ("service", "service-off", "bare", "gateway", "gateway-grpc", "fastapi")
POST_SCRIPT = """wrk.method = "POST"
wrk.body = '{"text":"hello, keel"}'
wrk.headers["Content-Type"] = "application/json"
"""
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# The servers (each in its own process: `--serve MODE PORT GEN [UPSTREAM]`)


def _serve_service(port: int, quiet: bool) -> None:
    import keel  # noqa: PLC0415
    from echo.v1 import echo_keel, echo_pb2  # noqa: PLC0415
    from keel.runtime import logs  # noqa: PLC0415
    from keel.runtime.server import run  # noqa: PLC0415

    class Echo(echo_keel.EchoServiceBase):  # type: ignore[misc]
        async def echo(self, request: Any, context: keel.Context) -> Any:
            return echo_pb2.EchoResponse(text=request.text)

    async def main() -> None:
        logs.configure("info")
        on = not quiet
        async with keel.Server([Echo()], port=0, rest_port=port, log_calls=on, metrics=on):
            print("ready", flush=True)
            await asyncio.Event().wait()

    run(main())


def _bare_app() -> Any:
    """REST echo as the least an in-process ASGI app can do: json_format both ways."""
    from echo.v1 import echo_pb2  # noqa: PLC0415
    from google.protobuf import json_format  # noqa: PLC0415

    async def echo(request: Any) -> Any:
        return echo_pb2.EchoResponse(text=request.text)

    headers = [(b"content-type", b"application/json")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            request = echo_pb2.EchoRequest(text=scope["path"].rsplit("/", 1)[1])
        else:
            body, more = b"", True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            request = json_format.Parse(body, echo_pb2.EchoRequest())
        payload = json_format.MessageToJson(await echo(request), indent=None).encode()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


def _serve_asgi(app: Any, port: int) -> None:
    import uvicorn  # noqa: PLC0415
    from keel.gateway.serve import uvicorn_config  # noqa: PLC0415

    config = uvicorn_config(app, "127.0.0.1", port)
    config.lifespan = "off"
    print("ready", flush=True)
    uvicorn.Server(config).run()


def serve(mode: str, port: int, upstream: int) -> None:
    if mode in ("service", "service-off"):
        _serve_service(port, quiet=mode == "service-off")
    elif mode == "bare":
        _serve_asgi(_bare_app(), port)
    else:
        raise SystemExit(f"unknown mode {mode}")


# The run


@dataclass
class Served:
    name: str
    port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


@dataclass
class Row:
    load: Load
    cpu_us: float


def _spawn(command: list[str]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
    env["KEEL_METRICS_PORT"] = "0"  # metrics are counted in-process; no HTTP server for them
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _ready(port: int, timeout: float = 30) -> None:
    """Wait for a correct answer: 200 and the echoed text, by GET and by POST."""
    deadline = time.monotonic() + timeout
    base = f"http://127.0.0.1:{port}/v1/echo"
    while True:
        try:
            with _DIRECT.open(f"{base}/check", timeout=2) as answer:
                assert json.load(answer) == {"text": "check"}, "GET echoed wrongly"
            post = urllib.request.Request(
                base, data=b'{"text":"check"}', headers={"content-type": "application/json"}
            )
            with _DIRECT.open(post, timeout=2) as answer:
                assert json.load(answer) == {"text": "check"}, "POST echoed wrongly"
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _start_paths(names: list[str], gen: Path, upstream: int) -> dict[str, Served]:
    me = [sys.executable, str(Path(__file__).resolve()), "--serve"]
    started: dict[str, Served] = {}
    for name in names:
        path = Served(name, free_port())
        if name in ("service", "service-off", "bare"):
            path.processes.append(_spawn([*me, name, str(path.port), str(gen)]))
        elif name == "gateway":
            service = started.get("service") or _start_paths(["service"], gen, upstream)["service"]
            started.setdefault("service", service)
            command = [str(BIN / "keel"), "gateway", "--gen", str(gen), "--port", str(path.port)]
            command += ["--rest-target", f"echo.v1.EchoService=127.0.0.1:{service.port}"]
            path.processes += [_spawn([*command, "--upstream", "rest"]), *service.processes]
        elif name == "gateway-grpc":
            command = [str(BIN / "keel"), "gateway", "--gen", str(gen), "--port", str(path.port)]
            command += ["--target", f"echo.v1.EchoService=127.0.0.1:{upstream}"]
            path.processes.append(_spawn([*command, "--upstream", "grpc"]))
        elif name == "fastapi":
            command = [sys.executable, str(HERE / "fastapi_proxy.py"), str(path.port)]
            path.processes.append(_spawn([*command, f"127.0.0.1:{upstream}", str(gen)]))
        started[name] = path
    for path in started.values():
        _ready(path.port)
    return started


def _measure(path: Served, upstream: subprocess.Popen[bytes], seconds: float) -> list[Row]:
    pids = [p.pid for p in path.processes]
    if path.name in ("gateway-grpc", "fastapi"):
        pids.append(upstream.pid)
    script = WORK / "post.lua"
    rows = []
    for url, body in (
        (f"http://127.0.0.1:{path.port}/v1/echo/hello", None),
        (f"http://127.0.0.1:{path.port}/v1/echo", script),
    ):
        began = sum(cpu_seconds(pid) for pid in pids)
        load = wrk(url, 50, seconds, body)
        spent = sum(cpu_seconds(pid) for pid in pids) - began
        rows.append(Row(load, spent / max(1, load.ok + load.failed) * 1e6))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median kept)")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        mode, port, gen = args.serve[:3]
        sys.path.insert(0, gen)
        serve(mode, int(port), int(args.serve[3]) if len(args.serve) > 3 else 0)
        return
    require_tools("wrk")
    WORK.mkdir(parents=True, exist_ok=True)
    gen = generate_echo(WORK)
    (WORK / "post.lua").write_text(POST_SCRIPT)
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "echo_server.py"), "raw", str(upstream_port), str(gen)],
        stdout=subprocess.DEVNULL,
    )
    paths: dict[str, Served] = {}
    runs: dict[tuple[str, str], list[Row]] = {}
    try:
        asyncio.run(echo_ready(upstream_port))
        paths = _start_paths(list(args.paths), gen, upstream_port)
        for path in paths.values():  # warm-up
            _measure(path, upstream, 1)
        for round_ in range(args.rounds):  # interleaved: drift in the machine hits every path
            order = args.paths if round_ % 2 == 0 else list(reversed(args.paths))
            for name in order:
                measured = _measure(paths[name], upstream, args.duration)
                for route, row in zip(("GET", "POST"), measured, strict=True):
                    runs.setdefault((name, route), []).append(row)
    finally:
        _stop([upstream, *{p.pid: p for s in paths.values() for p in s.processes}.values()])
    _report(args, runs)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each, then SIGKILL to any still running 10 s later."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _report(args: argparse.Namespace, runs: dict[tuple[str, str], list[Row]]) -> None:
    print(
        f"REST echo; wrk -t1 -c50, {args.duration:g} s per run, {args.rounds} interleaved rounds; "
        "medians; CPU per request summed over the path's server processes (from /proc)"
    )
    print(
        f"{'path':<13}{'route':<6}{'QPS':>8}{'xFastAPI':>10}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'failed':>8}{'CPU µs/req':>12}{'xbare CPU':>11}"
    )
    for (name, route), rows in runs.items():
        qps = _median([r.load.qps for r in rows])
        cpu = _median([r.cpu_us for r in rows])
        fastapi = runs.get(("fastapi", route))
        bare = runs.get(("bare", route))
        ratio = f"{qps / _median([r.load.qps for r in fastapi]):.2f}x" if fastapi else "-"
        cpu_ratio = f"{cpu / _median([r.cpu_us for r in bare]):.2f}x" if bare else "-"
        p50 = _median([r.load.p50_ms for r in rows])
        p99 = _median([r.load.p99_ms for r in rows])
        failed = sum(r.load.failed for r in rows)
        print(
            f"{name:<13}{route:<6}{qps:>8.0f}{ratio:>10}{p50:>8.2f}{p99:>8.2f}{failed:>8}"
            f"{cpu:>12.0f}{cpu_ratio:>11}"
        )
    print(
        "targets: service >= 5x fastapi QPS; service CPU per request <= 1.5x bare;"
        " gateway >= 1.5x fastapi QPS"
    )


if __name__ == "__main__":
    main()
