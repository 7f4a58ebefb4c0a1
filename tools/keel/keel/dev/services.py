"""The services `keel dev` runs: discovered under `services/`, and how each one is started."""

from __future__ import annotations

import os
import socket
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from keel.dev import spare
from keel.runtime import discovery
from keel.runtime.config import REST_TARGET_PREFIX, ConfigError, Settings, target_key


@dataclass(frozen=True)
class DevService:
    name: str
    """Its folder under `services/`."""
    package: str
    """What `python -m` runs (its `src/<package>/__main__.py`)."""
    serves: tuple[str, ...]
    port: int
    """gRPC, from the registry (metrics on port + 1000)."""
    src: Path | None = None
    """Its `src/` folder (first on its import path, so the code keel dev watches is what runs)."""


def survey(services_dir: Path, registry: Path) -> tuple[list[DevService], dict[str, str]]:
    """The runnable services under `services_dir`, and why each other service folder (by
    name) cannot run yet."""
    settings = Settings(registry=str(registry))
    found: list[DevService] = []
    problems: dict[str, str] = {}
    for pyproject in sorted(services_dir.glob("*/pyproject.toml")):
        try:
            service = _service(pyproject, registry, settings)
        except (ConfigError, ValueError, OSError) as error:  # (a TOML error is a ValueError)
            problems[pyproject.parent.name] = str(error)
            continue
        if service is not None:
            found.append(service)
    return found, problems


def _service(pyproject: Path, registry: Path, settings: Settings) -> DevService | None:
    data = tomllib.loads(pyproject.read_text())
    serves = tuple(data.get("tool", {}).get("keel", {}).get("serves", ()))
    if not serves:
        return None
    mains = sorted(pyproject.parent.glob("src/*/__main__.py"))
    if len(mains) != 1:
        raise ConfigError(f"{pyproject.parent}: expected one src/<package>/__main__.py")
    target = discovery.resolve(serves[0], settings)
    host, _, port = target.rpartition(":")
    if not port.isdigit() or "/" in host:
        raise ConfigError(f"{registry}: {serves[0]} needs a host:port address for keel dev")
    package = mains[0].parent
    return DevService(
        pyproject.parent.name, package.name, serves, int(port), package.parent.resolve()
    )


def free_ports(count: int, taken: set[int]) -> list[int]:
    """`count` distinct free ports on 127.0.0.1, none of `taken` (each service's REST port:
    chosen once per `keel dev` run, so it stays the same across restarts)."""
    chosen: list[int] = []
    while len(chosen) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in taken and port not in chosen:
            chosen.append(port)
    return chosen


PER_SERVICE = ("KEEL_DATABASE_URL", "KEEL_STATE_DIR", "KEEL_MIGRATE", "KEEL_REST_PORT")
"""Settings that name one service's data or port: never passed on from keel dev's environment."""


def import_path(*first: Path | None) -> str:
    """PYTHONPATH with `first` in front of the one keel dev was given."""
    given = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join([*(str(p) for p in first if p is not None), *filter(None, [given])])


def service_command(service: DevService) -> list[str]:
    return [sys.executable, "-m", service.package]


def service_env(
    service: DevService, *, rest_port: int, gen: Path, registry: Path, state: Path, nats_url: str
) -> dict[str, str]:
    """The environment a service runs in under keel dev."""
    inherited = {k: v for k, v in os.environ.items() if k not in PER_SERVICE}
    return {
        **inherited,
        "PYTHONPATH": import_path(gen.resolve(), service.src),
        "KEEL_HOST": "127.0.0.1",
        "KEEL_PORT": str(service.port),
        "KEEL_METRICS_PORT": str(service.port + 1000),
        "KEEL_REST_PORT": str(rest_port),
        "KEEL_WORKERS": "1",  # one process each here
        "KEEL_LOG_FORMAT": "console",
        "KEEL_GRACE_PERIOD": "5",
        "KEEL_REGISTRY": str(registry.resolve()),
        "KEEL_STATE_DIR": str((state / service.name).resolve()),
        "KEEL_MIGRATE": "true",
        "KEEL_NATS_URL": nats_url,
    }


def service_spare(service: DevService, gen: Path) -> list[str]:
    """The command that keeps a warm spare of `service` (keel.dev.spare), up to its `--`."""
    names = [*spare.KEEL_SERVICE]
    fresh = [gen.resolve()]
    if service.src is not None:
        names += spare.imported_by(service.src, service.package)
        fresh.append(service.src)
    return _spare_command(names, fresh)


def gateway_spare(gen: Path) -> list[str]:
    return _spare_command(list(spare.KEEL_GATEWAY), [gen.resolve()])


def gen_spare(gen: Path) -> list[str]:
    """The warm spare of `keel gen` (a saved proto's regeneration)."""
    return _spare_command(list(spare.KEEL_GEN), [gen.resolve()])


def _spare_command(names: list[str], fresh: list[Path]) -> list[str]:
    options = [arg for name in names for arg in ("--preload", name)]
    options += [arg for folder in fresh for arg in ("--fresh", str(folder))]
    return [sys.executable, "-m", "keel.dev.spare", *options, "--"]


def gateway_command(gen: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "keel.cli", "gateway", "--gen", str(gen), "--port", str(port)]


def gateway_env(gen: Path, registry: Path, rest: Mapping[str, int]) -> dict[str, str]:
    """The gateway's environment: the registry (the services' gRPC addresses) and, for each
    service (by its full proto name) in `rest` (full name → REST port), where it serves REST,
    which the gateway passes requests through to (KEEL_REST_TARGET_<SERVICE>)."""
    return {
        **os.environ,
        "PYTHONPATH": import_path(gen.resolve()),
        "KEEL_REGISTRY": str(registry.resolve()),
        "KEEL_LOG_FORMAT": "console",
        **{
            f"{REST_TARGET_PREFIX}{target_key(name)}": f"127.0.0.1:{port}"
            for name, port in rest.items()
        },
    }
