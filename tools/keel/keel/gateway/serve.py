"""`keel gateway`: serve the REST gateway with uvicorn (uvloop + httptools)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import uvicorn

from keel.gateway.app import Gateway
from keel.gateway.routes import RouteTable
from keel.runtime import config


def build(gen: Path, targets: Mapping[str, str], default_target: str | None) -> Gateway:
    """A gateway for every `google.api.http` method in the generated code under `gen`."""
    return Gateway(
        RouteTable.from_generated(gen),
        targets=targets,
        default_target=default_target,
        settings=config.current(),
    )


def run(
    gen: Path, targets: Mapping[str, str], default_target: str | None, host: str, port: int
) -> None:
    """Serve until interrupted."""
    gateway = build(gen, targets, default_target)
    count = len(gateway.routes.routes)
    print(f"keel gateway: {count} routes on http://{host}:{port}", flush=True)
    uvicorn.run(
        gateway,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
