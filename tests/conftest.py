"""Shared helpers: real buf, real keel CLI, real grpc.aio servers on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from keel.gateway.routes import RouteTable

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GOLDEN = REPO / "tests" / "golden"
SHOP = (
    "acme.catalog.v1.CatalogService",
    "acme.orders.v1.OrderService",
    "acme.payments.v1.PaymentService",
)
"""The example shop's services (services/catalog, orders and payments). The workspace may hold
others (`keel new service`, as the README shows): a test about the shop selects these."""


def keel(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `keel` console script."""
    return subprocess.run(
        [str(BIN / "keel"), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def write_workspace(
    root: Path, files: dict[str, str], modules: tuple[str, ...] = ("proto",)
) -> Path:
    """A buf v2 workspace at `root` with `files` (paths relative to root)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["version: v2", "modules:", *(f"  - path: {m}" for m in modules)]
    (root / "buf.yaml").write_text("\n".join(lines) + "\n")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def start_kitchen_server(env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    """tests/servers/kitchen_server.py under `keel.serve` in its own process, and its port.

    Settings start clean (no KEEL_* or OTEL_* from the caller's environment): port 0 on
    127.0.0.1, metrics off, JSON logs; `env` adds to them. The port comes from the "serving" line.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
    settings = {
        "KEEL_PORT": "0",
        "KEEL_HOST": "127.0.0.1",
        "KEEL_METRICS_PORT": "0",
        "KEEL_LOG_FORMAT": "json",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "tests/servers/kitchen_server.py"],
        cwd=REPO,
        env={**clean, **settings},
        stdout=subprocess.PIPE,
        text=True,
    )
    if process.stdout is None:
        raise RuntimeError("no stdout pipe")
    line = process.stdout.readline()
    started = json.loads(line)
    if started.get("event") != "serving":
        process.kill()
        raise RuntimeError(f"kitchen server did not start: {line}")
    return process, int(started["port"])


@asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """`app` under a real uvicorn on a free loopback port; yields its base URL."""
    import uvicorn  # noqa: PLC0415
    from keel.gateway.serve import uvicorn_config  # noqa: PLC0415

    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0))
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def shop_routes(gen: Path = REPO / "gen") -> RouteTable:
    """The gateway's routes of the example shop's services alone, with their OpenAPI documents:
    `RouteTable.from_generated(gen)` (every message type known, the AsyncAPI document and the
    diagram too) without the other services the workspace may hold, which a test that starts
    the shop does not run."""
    from keel.gateway.routes import RouteTable, merge_openapi  # noqa: PLC0415

    whole = RouteTable.from_generated(gen)
    services = [service for service in whole.services if service.name in SHOP]
    assert sorted(service.name for service in services) == sorted(SHOP)
    documents = dict.fromkeys(gen / "openapi" / Path(s.file).with_suffix(".json") for s in services)
    return RouteTable(services, merge_openapi(documents), whole.asyncapi, whole.diagram)


def unused_service_name(preferred: str, root: Path = REPO) -> str:
    """`preferred`, else `preferred` followed by 2, 3, ...: the first name `keel new service`
    accepts in the workspace at `root` with this virtualenv (no such service folder, proto
    package or importable package yet), so that a test that scaffolds a service never collides
    with one the user made."""
    from keel.scaffold.service import ScaffoldError, check_name  # noqa: PLC0415

    for suffix in ("", *map(str, range(2, 100))):
        try:
            check_name(preferred + suffix, root)
        except ScaffoldError:
            continue
        return preferred + suffix
    raise RuntimeError(f"no unused service name like {preferred!r} in {root}")


def registry_ports(root: Path = REPO) -> set[int]:
    """The ports of the services registered in `root`'s services/registry.toml (gRPC ports, as
    `keel new service` reads them: a new service may not take one of them)."""
    import tomllib  # noqa: PLC0415

    targets = tomllib.loads((root / "services/registry.toml").read_text()).get("targets", {})
    return {int(address.rpartition(":")[2]) for address in targets.values()}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path → bytes)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def golden_out() -> Iterator[Path]:
    """The committed golden outputs, importable (tests/golden/out on sys.path)."""
    out = GOLDEN / "out"
    sys.path.insert(0, str(out))
    yield out
    sys.path.remove(str(out))


@pytest.fixture
def copy_golden_workspace(tmp_path: Path) -> Path:
    """A private copy of the golden proto workspace."""
    target = tmp_path / "ws"
    shutil.copytree(GOLDEN / "proto", target)
    return target


@pytest.fixture
def spans() -> Iterator[Any]:
    """Spans of every server and client, kept in memory (an InMemorySpanExporter)."""
    from keel.runtime import tracing  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)
    provider.shutdown()


def answers(url: str) -> bool:
    """Whether a GET of `url` answers 200 (no proxy; False while nothing listens)."""
    import urllib.request  # noqa: PLC0415

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False
