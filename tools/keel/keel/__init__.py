"""Keel: a gRPC-first platform for Python microservices.

The public API that services and generated code use. Everything else is internal.
"""

from keel import errors
from keel.runtime.client import ClientBase, Metadata
from keel.runtime.context import Context
from keel.runtime.server import add_to_server
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
    "ServiceBase",
    "ServiceSpec",
    "__version__",
    "add_to_server",
    "errors",
]
