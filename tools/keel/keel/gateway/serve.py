"""`keel gateway`: serve the REST gateway with uvicorn (uvloop + httptools), in 1..N processes."""

from __future__ import annotations

import importlib
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn

from keel.gateway.app import Gateway, Middleware
from keel.gateway.passthrough import rest_addresses
from keel.gateway.routes import RouteTable
from keel.runtime import config, listen, logs, tracing, workers

_log = logs.get_logger("keel.gateway")
SERVICE_NAME = "keel-gateway"
"""The gateway's OpenTelemetry service name."""


def build(
    gen: Path,
    targets: Mapping[str, str],
    default_target: str | None,
    middleware: Sequence[Middleware] = (),
    *,
    rest_targets: Mapping[str, str] | None = None,
    upstream: str | None = None,
) -> Gateway:
    """A gateway for every `google.api.http` method in the generated code under `gen`, tracing
    when KEEL_OTLP_ENDPOINT says so (set up here: in each worker, after the fork)."""
    settings = config.current()
    if settings.otlp_endpoint:
        tracing.configure(
            settings.otlp_endpoint,
            SERVICE_NAME,
            settings.trace_sample_ratio,
            settings.trace_rate_limit,
        )
    return Gateway(
        RouteTable.from_generated(gen),
        targets=targets,
        default_target=default_target,
        settings=settings,
        middleware=middleware,
        rest_targets=rest_targets,
        upstream=upstream,
    )


def load_middleware(reference: str) -> Middleware:
    """`package.module:name`: an ASGI middleware class or factory taking the app."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{reference!r}: expected MODULE:NAME")
    try:
        found: Middleware = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{reference!r}: {error}") from None
    if not callable(found):
        raise ValueError(f"{reference!r} is not a class or function taking the app")
    return found


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


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket for `host:port` that other processes may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _announce(routes: int, passed: Mapping[str, Any], host: str, port: int) -> None:
    """The "serving" line: routes, address, and the services passed through to their REST
    ports (`rest`; the others are called over gRPC)."""
    rest = ",".join(sorted(passed)) or "-"
    _log.info("serving", routes=routes, url=f"http://{host}:{port}", rest=rest)


def run(
    gen: Path,
    targets: Mapping[str, str],
    default_target: str | None,
    host: str,
    port: int,
    *,
    worker_count: int = 1,
    middleware: Sequence[Middleware] = (),
    rest_targets: Mapping[str, str] | None = None,
    upstream: str | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; the exit status.

    With `worker_count` > 1, that many processes each run a gateway on the same port
    (SO_REUSEPORT: the kernel spreads connections); `/metrics` shows them merged.
    """
    settings = config.current()
    logs.configure(settings.log_level, console=settings.console_logs)
    try:  # (the workers' sockets share the port with each other, never with another process)
        listen.check_free(host, port, "the REST gateway")
    except listen.ListenError as error:
        print(f"keel gateway: {error}", file=sys.stderr)
        return 1
    if worker_count <= 1:
        gateway = build(
            gen, targets, default_target, middleware, rest_targets=rest_targets, upstream=upstream
        )
        _announce(len(gateway.routes.routes), gateway.passthrough.pools, host, port)
        uvicorn.Server(uvicorn_config(gateway, host, port)).run()
        tracing.shutdown()
        return 0
    table = RouteTable.from_generated(gen)
    passed = rest_addresses(table, settings, rest_targets, upstream)
    _announce(len(table.routes), passed, host, port)

    def worker() -> None:
        sock = reuse_port_socket(host, port)
        app = build(
            gen, targets, default_target, middleware, rest_targets=rest_targets, upstream=upstream
        )
        uvicorn.Server(uvicorn_config(app, host, port)).run(sockets=[sock])
        tracing.shutdown()

    return workers.run(worker, replace(settings, workers=worker_count), serve_metrics=False)
