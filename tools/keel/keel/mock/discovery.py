"""The generated `<Service>Base` of each service named, found as the gateway finds services:
every `*_keel` module under the generated code's import root (keel.gateway.routes)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from keel.gateway.routes import RouteTable
from keel.runtime.service import ServiceBase


class UnknownServiceError(LookupError):
    """A service name the generated code does not declare."""


def bases(gen: Path, names: Sequence[str]) -> list[type[ServiceBase]]:
    """The generated base class of each full service name, in order."""
    specs = {spec.name: spec for spec in RouteTable.from_generated(gen).services}
    missing = [name for name in names if name not in specs]
    if missing:
        known = ", ".join(sorted(specs)) or "none"
        raise UnknownServiceError(f"no service {', '.join(missing)} under {gen} (known: {known})")
    found = []
    for name in names:
        spec = specs[name]
        module = importlib.import_module(
            spec.file.removesuffix(".proto").replace("/", ".") + "_keel"
        )
        classes = [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, ServiceBase)
            and value.__dict__.get("__keel_service__") is spec
        ]
        if not classes:
            raise UnknownServiceError(f"{name}: no generated base class in {module.__name__}")
        found.append(classes[0])
    return found
