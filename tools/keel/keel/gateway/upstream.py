"""The gRPC services behind the gateway, called through the machinery generated clients use.

One client per service (keel.runtime.client.ClientBase), so a call from the edge gets what any
Keel client call gets: the target's circuit breaker, a CLIENT span, go-grpc-prometheus client
metrics and typed errors. Channels open on first use and close with the gateway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2

from keel.runtime import discovery
from keel.runtime.client import ClientBase, Metadata
from keel.runtime.config import ConfigError, Settings
from keel.runtime.spec import MethodSpec, ServiceSpec


class Upstreams:
    """Clients of the services in `services`, found at `targets` (full service name → address),
    else `default_target`, else by discovery (KEEL_TARGET_*, services/registry.toml)."""

    def __init__(
        self,
        services: Iterable[ServiceSpec],
        settings: Settings,
        targets: Mapping[str, str] | None = None,
        default_target: str | None = None,
        interceptors: Sequence[Any] = (),
    ) -> None:
        self.services = {service.name: service for service in services}
        self.settings = settings
        self.targets = dict(targets or {})
        self.default_target = default_target
        self.interceptors = list(interceptors)
        self._clients: dict[str, ClientBase] = {}

    def target(self, service: ServiceSpec) -> str:
        if service.name in self.targets:
            return self.targets[service.name]
        if self.default_target:
            return self.default_target
        return discovery.resolve(service.name, self.settings)

    def client(self, service_name: str) -> ClientBase:
        """The client of a service (its channel opens on first use)."""
        client = self._clients.get(service_name)
        if client is None:
            service = self.services[service_name]
            cls: type[ClientBase] = type(
                f"{service.name}EdgeClient", (ClientBase,), {"__keel_service__": service}
            )
            options: dict[str, Any] = {"settings": self.settings}
            if self.interceptors:
                options["interceptors"] = self.interceptors
            client = cls.connect(self.target(service), **options)
            self._clients[service_name] = client
        return client

    def stream(
        self, method: MethodSpec[Any, Any], request: Any, timeout: float, metadata: Metadata
    ) -> AsyncIterator[Any]:
        """A server-streaming call's responses (cancelled when the iteration is)."""
        return self.client(method.service)._stream(method, request, timeout, metadata)

    async def not_serving(self, names: Iterable[str] | None = None) -> list[str]:
        """The services (of `names`, default all) whose health check does not answer SERVING."""
        down = []
        for name in self.services if names is None else names:
            try:
                check = self.client(name).channel.unary_unary(
                    "/grpc.health.v1.Health/Check",
                    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                    response_deserializer=health_pb2.HealthCheckResponse.FromString,
                )
                answer = await check(health_pb2.HealthCheckRequest(service=name), timeout=2)
                if answer.status != health_pb2.HealthCheckResponse.SERVING:
                    down.append(name)
            except (grpc.aio.AioRpcError, ConfigError):
                down.append(name)
        return down

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
