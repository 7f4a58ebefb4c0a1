"""The per-call context handed to service methods."""

from typing import Any, TypeAlias

import grpc.aio

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
"""The grpc.aio servicer context of the call being handled."""
