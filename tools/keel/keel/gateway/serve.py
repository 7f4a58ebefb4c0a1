"""`keel gateway`: serve the REST gateway with uvicorn (uvloop + httptools), in 1..N processes."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn

from keel.gateway.app import Gateway
from keel.gateway.routes import RouteTable
from keel.runtime import config, workers


def build(gen: Path, targets: Mapping[str, str], default_target: str | None) -> Gateway:
    """A gateway for every `google.api.http` method in the generated code under `gen`."""
    return Gateway(
        RouteTable.from_generated(gen),
        targets=targets,
        default_target=default_target,
        settings=config.current(),
    )


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """How Keel runs an ASGI app. The gateway reads `X-Forwarded-For` itself (it appends the
    peer before forwarding), so uvicorn must not rewrite the client address from it."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _announce(routes: int, host: str, port: int) -> None:
    print(f"keel gateway: {routes} routes on http://{host}:{port}", flush=True)


def run(
    gen: Path,
    targets: Mapping[str, str],
    default_target: str | None,
    host: str,
    port: int,
    *,
    worker_count: int = 1,
) -> int:
    """Serve until SIGTERM/SIGINT; the exit status.

    With `worker_count` > 1, that many processes each run a gateway on the same port
    (SO_REUSEPORT: the kernel spreads connections); `/metrics` shows them merged.
    """
    if worker_count <= 1:
        gateway = build(gen, targets, default_target)
        _announce(len(gateway.routes.routes), host, port)
        uvicorn.Server(uvicorn_config(gateway, host, port)).run()
        return 0
    _announce(len(RouteTable.from_generated(gen).routes), host, port)

    def worker() -> None:
        sock = _reuse_port_socket(host, port)
        app = build(gen, targets, default_target)
        uvicorn.Server(uvicorn_config(app, host, port)).run(sockets=[sock])

    settings = replace(config.current(), workers=worker_count)
    return workers.run(worker, settings, serve_metrics=False)
