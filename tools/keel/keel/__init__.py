"""Keel: a gRPC-first platform for Python microservices.

The public API that services and generated code use. Everything else is internal. Names load
on first use, so `keel gen` and other commands do not pay for importing grpc.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel import data, errors, events, idempotency, saga
    from keel.runtime.client import ClientBase, Metadata
    from keel.runtime.config import Settings
    from keel.runtime.context import Context
    from keel.runtime.handlers import add_to_server
    from keel.runtime.server import Server, serve
    from keel.runtime.service import ServiceBase
    from keel.runtime.spec import (
        Access,
        AuthPolicy,
        HttpRule,
        Idempotency,
        MethodSpec,
        RpcKind,
        ServiceSpec,
    )

__version__ = "0.1.0"

_EXPORTS = {
    "Access": "keel.runtime.spec",
    "AuthPolicy": "keel.runtime.spec",
    "ClientBase": "keel.runtime.client",
    "Context": "keel.runtime.context",
    "HttpRule": "keel.runtime.spec",
    "Idempotency": "keel.runtime.spec",
    "Metadata": "keel.runtime.client",
    "MethodSpec": "keel.runtime.spec",
    "RpcKind": "keel.runtime.spec",
    "ServiceBase": "keel.runtime.service",
    "ServiceSpec": "keel.runtime.spec",
    "Server": "keel.runtime.server",
    "Settings": "keel.runtime.config",
    "add_to_server": "keel.runtime.handlers",
    "serve": "keel.runtime.server",
}

__all__ = [
    "Access",
    "AuthPolicy",
    "ClientBase",
    "Context",
    "HttpRule",
    "Idempotency",
    "Metadata",
    "MethodSpec",
    "RpcKind",
    "Server",
    "ServiceBase",
    "ServiceSpec",
    "Settings",
    "__version__",
    "add_to_server",
    "data",
    "errors",
    "events",
    "idempotency",
    "saga",
    "serve",
]


def __getattr__(name: str) -> Any:
    if name in ("data", "errors", "events", "idempotency", "saga"):
        return importlib.import_module(f"keel.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
