"""Where a service is: `KEEL_TARGET_<SERVICE>`, else the registry file, else its template.

The registry (`services/registry.toml`, found from the working folder upwards, or
`KEEL_REGISTRY`) maps full service names to an address, a gRPC target URI (`dns:///name:port`)
or a list of `ip:port` replicas; `[defaults] template` covers the rest, e.g.
`"dns:///{name}:50051"` for one Kubernetes Service per gRPC service ({name}: `order-service`
for `OrderService`; {package}: `acme.orders.v1`).

A service's own REST port (KEEL_REST_PORT), where `keel gateway` passes requests through to,
is found the same way by `resolve_rest`: `KEEL_REST_TARGET_<SERVICE>`, else the registry's
`[rest_targets]`, else its `[defaults] rest_template` (`"{name}:8080"`), else unknown (None:
the gateway calls the service over gRPC). Each is one `host:port` (or `http://host:port`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from keel.naming import snake_case
from keel.runtime.config import (
    REST_TARGET_PREFIX,
    TARGET_PREFIX,
    ConfigError,
    Settings,
    rest_address,
    target_key,
)

REGISTRY = Path("services") / "registry.toml"


def _find_registry(settings: Settings) -> Path | None:
    if settings.registry:
        path = Path(settings.registry)
        if not path.is_file():
            raise ConfigError(f"KEEL_REGISTRY={settings.registry!r}: no such file")
        return path
    for folder in (Path.cwd(), *Path.cwd().parents):
        candidate = folder / REGISTRY
        if candidate.is_file():
            return candidate
    return None


def _load(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from None


def _uri(value: Any, origin: str) -> str:
    """A gRPC target URI from a registry value: an address, a URI or a list of ip:port."""
    if isinstance(value, str) and "," in value:
        value = [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        scheme = "ipv6" if any(v.startswith("[") for v in value) else "ipv4"
        return f"{scheme}:{','.join(value)}"
    raise ConfigError(f"{origin}: expected host:port, a target URI or a list of ip:port")


def resolve(service: str, settings: Settings) -> str:
    """The gRPC target URI for the service named `service` (its full proto name)."""
    key = target_key(service)
    if key in settings.targets:
        return _uri(settings.targets[key], f"{TARGET_PREFIX}{key}")
    path = _find_registry(settings)
    if path is not None:
        registry = _load(path)
        targets = registry.get("targets", {})
        if service in targets:
            return _uri(targets[service], f"{path}: targets.{service!r}")
        template = registry.get("defaults", {}).get("template")
        if isinstance(template, str):
            return template.format(**template_fields(service))
    where = f" or add it to {path}" if path else f" or create {REGISTRY}"
    raise ConfigError(f"no address for {service}: set {TARGET_PREFIX}{key}{where}")


def resolve_rest(service: str, settings: Settings) -> str | None:
    """The `host:port` of the REST routes `service` (a full proto name) serves itself, or None
    when neither KEEL_REST_TARGET_<SERVICE> nor the registry says."""
    key = target_key(service)
    if key in settings.rest_targets:
        return settings.rest_targets[key]  # (checked as the settings were read)
    path = _find_registry(settings)
    if path is None:
        return None
    registry = _load(path)
    value = registry.get("rest_targets", {}).get(service)
    origin = f"{path}: rest_targets.{service!r}"
    if value is None:
        value = registry.get("defaults", {}).get("rest_template")
        if value is None:
            return None
        origin = f"{path}: defaults.rest_template"
        if isinstance(value, str):
            value = value.format(**template_fields(service))
    if not isinstance(value, str):
        raise ConfigError(f"{origin}: expected host:port (set {REST_TARGET_PREFIX}{key} instead)")
    try:
        return rest_address(value)
    except ValueError as error:
        raise ConfigError(f"{origin}: {error}") from None


def template_fields(service: str) -> dict[str, str]:
    """What a `[defaults] template` may use for `service` (a full proto name): `name`, its
    short name in kebab case (`order-service`, one Kubernetes Service each), and `package`."""
    package, _, name = service.rpartition(".")
    return {"name": snake_case(name).replace("_", "-"), "package": package}
