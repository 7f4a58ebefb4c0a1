"""Keel's REST gateway: `google.api.http` transcoding in front of gRPC services (an ASGI app)."""

from keel.gateway.app import Gateway
from keel.gateway.routes import RouteTable

__all__ = ["Gateway", "RouteTable"]
