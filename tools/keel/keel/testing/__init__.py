"""Keel's test kit: real servers in-process on free loopback ports, and typed clients.

    async with keel.testing.cluster(Orders(), Catalog()) as running:
        orders = running.client(orders_keel.OrderServiceClient)

Each service gets its own server; while the cluster runs, discovery points every service's
full name at its server, so services that call each other with `Client.connect()` find their
peers exactly as in production. The pytest plugin (`keel.testing.plugin`, registered
automatically) wraps this in fixtures.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import jwt

import keel
from keel.runtime import config
from keel.runtime.client import ClientBase
from keel.runtime.config import Settings, target_key
from keel.runtime.service import ServiceBase

ClientT = TypeVar("ClientT", bound=ClientBase)

__all__ = ["Cluster", "bearer", "cluster"]


def bearer(
    subject: str, secret: str, *, expires_in: float = 300, **claims: Any
) -> list[tuple[str, str]]:
    """gRPC metadata carrying an HS256 bearer token for `subject`, signed with `secret`, that
    expires in `expires_in` seconds (negative: already expired); `claims` are added (`aud`,
    `scope`, ...). For tests of services that verify their callers (`cluster(keys=...)`)."""
    body = {"sub": subject, "exp": int(time.time() + expires_in), **claims}
    return [("authorization", f"Bearer {jwt.encode(body, secret, algorithm='HS256')}")]


@dataclass
class Cluster:
    """Running servers, one per service, by full service name."""

    servers: dict[str, keel.Server]
    clients: list[ClientBase] = field(default_factory=list)

    def address(self, service: str) -> str:
        """`127.0.0.1:PORT` of the server for the service with this full name."""
        return f"127.0.0.1:{self.servers[service].port}"

    def client(self, client_cls: type[ClientT]) -> ClientT:
        """A connected client of `client_cls`'s service (closed when the cluster stops)."""
        opened = client_cls.connect(self.address(client_cls.__keel_service__.name))
        self.clients.append(opened)
        return opened


@asynccontextmanager
async def cluster(
    *services: ServiceBase,
    log_calls: bool = False,
    validate: bool = True,
    keys: Settings | None = None,
) -> AsyncIterator[Cluster]:
    """Serve each of `services` on its own loopback server, with discovery pointing at them;
    `keys` (settings with KEEL_JWT_SECRET or a JWKS) makes every server verify its callers."""
    running = Cluster({})
    previous = config.current()
    try:
        for service in services:
            server = keel.Server(
                [service], port=0, log_calls=log_calls, validate=validate, keys=keys
            )
            await server.start()
            running.servers[type(service).__keel_service__.name] = server
        targets = {
            **previous.targets,
            **{target_key(name): running.address(name) for name in running.servers},
        }
        config.set_current(replace(previous, targets=targets))
        yield running
    finally:
        config.set_current(previous)
        for opened in running.clients:
            await opened.close()
        for server in running.servers.values():
            await server.stop(0)
