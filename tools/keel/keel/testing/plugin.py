"""pytest fixtures for Keel services (needs pytest-asyncio).

Override `keel_services` with the implementations under test; then use

- `keel_cluster`: a `keel.testing.Cluster` serving them, one loopback server each;
- `keel_client`: a factory, `keel_client(OrderServiceClient)`, of connected typed clients;
- `keel_addr`: `keel_addr("acme.orders.v1.OrderService")`, the server's address.

pytest-grpc's names map as: grpc_servicer → keel_services, grpc_server → keel_cluster,
grpc_addr → keel_addr, grpc_stub_cls + grpc_stub → keel_client(StubClass).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import pytest_asyncio

from keel.runtime.client import ClientBase
from keel.runtime.service import ServiceBase
from keel.testing import Cluster, cluster


@pytest.fixture
def keel_services() -> Sequence[ServiceBase]:
    """The service implementations to serve: override this fixture in your tests."""
    raise pytest.UsageError(
        "override the keel_services fixture: return the service implementations to serve"
    )


@pytest_asyncio.fixture
async def keel_cluster(keel_services: Sequence[ServiceBase]) -> AsyncIterator[Cluster]:
    """The services of `keel_services`, each on its own loopback server."""
    async with cluster(*keel_services) as running:
        yield running


@pytest.fixture
def keel_client(keel_cluster: Cluster) -> Callable[[type[Any]], Any]:
    """`keel_client(OrderServiceClient)`: a connected client, closed after the test."""

    def make(client_cls: type[ClientBase]) -> Any:
        return keel_cluster.client(client_cls)

    return make


@pytest.fixture
def keel_addr(keel_cluster: Cluster) -> Callable[[str], str]:
    """`keel_addr("acme.orders.v1.OrderService")`: that service's `127.0.0.1:PORT`."""
    return keel_cluster.address
