"""`keel dev`: run every service of a repository locally, with readable logs, until Ctrl-C.

Services are the folders under `services/` whose pyproject.toml says
`[tool.keel] serves = ["acme.orders.v1.OrderService"]`; each runs as `python -m <package>` on
the port the registry gives its first service, metrics on that port + 1000, its own REST routes
(`google.api.http`, KEEL_REST_PORT) on a free port it reports as it starts, console logs
prefixed with the service's name; the REST gateway, one entry point for all of them, starts
once they all serve. Each service
gets its own state folder, `<state>/<name>` (KEEL_STATE_DIR: its SQLite database lives there),
and KEEL_MIGRATE=true, so it applies its pending migrations before it serves. A NATS broker
with JetStream (the bundled nats-server) starts first, on a free port, storing in `<state>/nats`
so that events outlive keel dev; every service gets its address (KEEL_NATS_URL). Ctrl-C (or
SIGTERM) drains and stops them all, the broker last.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tomllib
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

from keel.events.broker import Broker, BrokerError, start_broker
from keel.runtime import discovery
from keel.runtime.config import ConfigError, Settings

_COLORS = ("\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m")
_RESET = "\033[0m"


@dataclass(frozen=True)
class DevService:
    name: str
    package: str
    serves: tuple[str, ...]
    port: int


def discover(services_dir: Path, registry: Path) -> list[DevService]:
    """The runnable services under `services_dir`, with their ports from `registry`."""
    settings = Settings(registry=str(registry))
    found = []
    for pyproject in sorted(services_dir.glob("*/pyproject.toml")):
        data = tomllib.loads(pyproject.read_text())
        serves = tuple(data.get("tool", {}).get("keel", {}).get("serves", ()))
        if not serves:
            continue
        mains = sorted(pyproject.parent.glob("src/*/__main__.py"))
        if len(mains) != 1:
            raise ConfigError(f"{pyproject.parent}: expected one src/<package>/__main__.py")
        target = discovery.resolve(serves[0], settings)
        host, _, port = target.rpartition(":")
        if not port.isdigit() or "/" in host:
            raise ConfigError(f"{registry}: {serves[0]} needs a host:port address for keel dev")
        found.append(DevService(pyproject.parent.name, mains[0].parent.name, serves, int(port)))
    return found


_SERVING = re.compile(rb"\] serving\s")  # the event column of the console line, not any "serving"
_REST_PORT = re.compile(rb"\srest_port=(\d+)")
_ANSI = re.compile(rb"\x1b\[[0-9;]*m")


class Serving:
    """Set once a service logged its "serving" line, with the REST port it reported."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.rest_port = 0

    def seen(self, line: bytes) -> None:
        plain = _ANSI.sub(b"", line)
        if not self.event.is_set() and _SERVING.search(plain):
            found = _REST_PORT.search(plain)
            self.rest_port = int(found[1]) if found else 0
            self.event.set()


async def _relay(
    name: str, color: str, stream: asyncio.StreamReader, serving: Serving | None = None
) -> None:
    """Copy a process's lines to stdout, prefixed; note its "serving" line in `serving`."""
    prefix = f"{color}{name:>10}{_RESET} │ "
    while line := await stream.readline():
        if serving is not None:
            serving.seen(line)
        sys.stdout.write(prefix + line.decode(errors="replace"))
        sys.stdout.flush()


_PER_SERVICE = ("KEEL_DATABASE_URL", "KEEL_STATE_DIR", "KEEL_MIGRATE")
"""Settings that name one service's data: never passed on from keel dev's own environment."""


async def _start(command: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    if process.stdout is None:  # pragma: no cover (stdout=PIPE always gives a stream)
        raise RuntimeError("no stdout pipe")
    return process


async def _first(*waits: Awaitable[object]) -> None:
    """Until the first of `waits` is done (the others are cancelled)."""
    tasks = [asyncio.ensure_future(each) for each in waits]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run(
    services_dir: Path,
    registry: Path,
    gen: Path,
    gateway_port: int = 0,
    state: Path = Path(".keel/state"),
) -> int:
    """Start a NATS broker storing in `state/nats`, then the services, each with its state
    folder under `state`, then (once they all serve) the REST gateway on `gateway_port`, unless
    0; relay their logs; stop them all on SIGINT/SIGTERM or when one exits, the broker last."""
    services = discover(services_dir, registry)
    if not services:
        print(f"keel dev: no services with [tool.keel] serves under {services_dir}")
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    state.mkdir(parents=True, exist_ok=True)
    if not (state / ".gitignore").exists():
        (state / ".gitignore").write_text("# local state of `keel dev`\n*\n")
    try:
        broker = await asyncio.to_thread(start_broker, (state / "nats").resolve())
    except BrokerError as error:
        print(f"keel dev: cannot start the NATS broker: {error}", flush=True)
        return 1
    print(f"keel dev: NATS broker {broker.url} (JetStream, stored in {broker.store_dir})")
    try:
        code, early = await _serve(
            services,
            registry=registry,
            gen=gen,
            gateway_port=gateway_port,
            state=state,
            broker=broker,
            stop=stop,
        )
    finally:
        await asyncio.to_thread(broker.stop)
    if code:
        print(f"keel dev: {', '.join(early)} exited early; stopped the others", flush=True)
    else:
        print("keel dev: stopped", flush=True)
    return code


async def _serve(
    services: list[DevService],
    *,
    registry: Path,
    gen: Path,
    gateway_port: int,
    state: Path,
    broker: Broker,
    stop: asyncio.Event,
) -> tuple[int, list[str]]:
    """Run the services and the gateway until `stop` or one exits: (1 and the services that
    exited on their own, or 0 and [])."""
    path = os.pathsep.join(filter(None, [str(gen.resolve()), os.environ.get("PYTHONPATH", "")]))
    inherited = {k: v for k, v in os.environ.items() if k not in _PER_SERVICE}
    processes, relays, serving = [], [], []
    for index, service in enumerate(services):
        env = {
            **inherited,
            "PYTHONPATH": path,
            "KEEL_HOST": "127.0.0.1",
            "KEEL_PORT": str(service.port),
            "KEEL_METRICS_PORT": str(service.port + 1000),
            "KEEL_REST_PORT": "0",  # a free port, reported in the "serving" line
            "KEEL_WORKERS": "1",  # one process each here (workers need a fixed REST port)
            "KEEL_LOG_FORMAT": "console",
            "KEEL_GRACE_PERIOD": "5",
            "KEEL_REGISTRY": str(registry.resolve()),
            "KEEL_STATE_DIR": str((state / service.name).resolve()),
            "KEEL_MIGRATE": "true",
            "KEEL_NATS_URL": broker.url,
        }
        process = await _start([sys.executable, "-m", service.package], env)
        processes.append(process)
        serving.append(Serving())
        assert process.stdout is not None
        relays.append(
            asyncio.ensure_future(
                _relay(service.name, _COLORS[index % 6], process.stdout, serving[-1])
            )
        )
    exited = asyncio.ensure_future(
        asyncio.wait(
            [asyncio.ensure_future(p.wait()) for p in processes],
            return_when=asyncio.FIRST_COMPLETED,
        )
    )
    all_serving = asyncio.gather(*(started.event.wait() for started in serving))
    await _first(all_serving, asyncio.shield(exited), stop.wait())
    if gateway_port and not exited.done() and not stop.is_set():
        env = {
            **os.environ,
            "PYTHONPATH": path,
            "KEEL_REGISTRY": str(registry.resolve()),
            "KEEL_LOG_FORMAT": "console",
        }
        command = [sys.executable, "-m", "keel.cli", "gateway", "--gen", str(gen)]
        process = await _start([*command, "--port", str(gateway_port)], env)
        processes.append(process)
        services = [*services, DevService("gateway", "keel.gateway", (), gateway_port)]
        assert process.stdout is not None
        relays.append(asyncio.ensure_future(_relay("gateway", "\033[1m", process.stdout)))
        exited.cancel()
        exited = asyncio.ensure_future(
            asyncio.wait(
                [asyncio.ensure_future(p.wait()) for p in processes],
                return_when=asyncio.FIRST_COMPLETED,
            )
        )
    print("keel dev: services (gRPC, REST, metrics):")
    for service, started in zip(services, serving, strict=False):
        rest = f"http://127.0.0.1:{started.rest_port}" if started.rest_port else "-"
        for full_name in service.serves:
            metrics = f"http://127.0.0.1:{service.port + 1000}/metrics"
            print(f"  {full_name:<36} 127.0.0.1:{service.port}  {rest}  {metrics}")
    print(f"keel dev: events: NATS JetStream {broker.url}")
    if gateway_port and len(processes) > len(serving):
        url = f"http://127.0.0.1:{gateway_port}"
        print(f"keel dev: REST gateway {url}, API docs {url}/docs")
        print(f"keel dev: try: curl {url}/v1/products/p_mug")
    print("keel dev: Ctrl-C stops them all", flush=True)
    await _first(asyncio.shield(exited), stop.wait())
    early = [s.name for s, p in zip(services, processes, strict=True) if p.returncode is not None]
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    await asyncio.gather(*(p.wait() for p in processes))
    await asyncio.gather(*relays)
    exited.cancel()
    if early and not stop.is_set():
        return 1, early
    return 0, []
