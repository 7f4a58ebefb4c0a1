"""`keel dev` started as `make run` starts it, for the tests that run it: free ports, a registry
of its own, its state and its console log in a temporary folder (never the repository's)."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.testing.ports import free_port_pair

from tests.conftest import BIN, REPO, SHOP

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

SERVICES = SHOP
"""What `launch` registers: the example shop. keel dev says the workspace's other services (if
any) do not start, having no address in the test's registry, and serves the shop."""


def free_pair(avoid: Collection[int] = ()) -> int:
    """A port p with p and p + 1000 free (gRPC and metrics), and p not one of `avoid` (such as
    the ports a registry gives services that are not running)."""
    while (port := free_port_pair()) in avoid:
        pass
    return port


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
    group: bool = False,
) -> Launched:
    """Start `keel dev [options]` in `cwd` with every service of `services` on a free port
    pair, the gateway on another, state and log under `folder`; the environment without
    KEEL_/OTEL_ settings, plus `env`; with `group`, as a terminal runs it (a process group of
    its own, for os.killpg)."""
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
            start_new_session=group,
        )
    return Launched(process, port, registry, log)


def descendants(pid: int) -> set[int]:
    """Every process started by `pid`, and by those, now (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening(ports: set[int]) -> set[int]:
    """Which of `ports` a socket listens on now (TCP, IPv4 and IPv6, from /proc/net)."""
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            port = int(local.rsplit(":", 1)[1], 16)
            if state == "0A" and port in ports:  # 0A: LISTEN
                found.add(port)
    return found


def new_item(base: str, title: str = "first", name: str = "inventory") -> dict[str, Any]:
    """POST /v1/<name>/items to `base` (a service made by `keel new service <name>`), as its
    README shows; the item it answers (200)."""
    request = urllib.request.Request(
        f"{base}/v1/{name}/items",
        data=json.dumps({"title": title}).encode(),
        headers={"content-type": "application/json", "idempotency-key": f"item-{title}"},
        method="POST",
    )
    with _DIRECT.open(request, timeout=30) as created:
        assert created.status == 200
        item: dict[str, Any] = json.loads(created.read())
    return item
