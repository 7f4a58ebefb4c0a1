"""`keel dev` started as `make run` starts it, for the tests that run it: free ports, a registry
of its own, its state and its console log in a temporary folder (never the repository's)."""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import BIN, REPO

SERVICES = (
    "acme.catalog.v1.CatalogService",
    "acme.orders.v1.OrderService",
    "acme.payments.v1.PaymentService",
)


def free_pair() -> int:
    """A port p with p and p + 1000 free (gRPC and metrics)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 1000 > 65535:
            continue
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.1", port + 1000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


@dataclass
class Launched:
    """A `keel dev` process: its gateway's port, registry and console log."""

    process: subprocess.Popen[bytes]
    port: int
    registry: Path
    log: Path

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def launch(
    folder: Path,
    *options: str,
    cwd: Path = REPO,
    services: tuple[str, ...] = SERVICES,
    env: dict[str, str] | None = None,
) -> Launched:
    """Start `keel dev [options]` in `cwd` with every service of `services` on a free port
    pair, the gateway on another, state and log under `folder`; the environment without
    KEEL_/OTEL_ settings, plus `env`."""
    registry = folder / "registry.toml"
    lines = [f'"{name}" = "127.0.0.1:{free_pair()}"' for name in services]
    registry.write_text("[targets]\n" + "\n".join(lines) + "\n")
    port = free_pair()
    log = folder / "dev.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                *(str(BIN / "keel"), "dev", *options, "--registry", str(registry)),
                *("--gateway-port", str(port), "--state-dir", str(folder / "state")),
            ],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean, **(env or {})},
        )
    return Launched(process, port, registry, log)
