"""pytest fixtures for Keel services (needs pytest-asyncio).

Override `keel_services` with the implementations under test (and `keel_keys`, settings with
KEEL_JWT_SECRET or a JWKS, for servers that verify their callers); then use

- `keel_cluster`: a `keel.testing.Cluster` serving them, one loopback server each;
- `keel_client`: a factory, `keel_client(OrderServiceClient)`, of connected typed clients;
- `keel_addr`: `keel_addr("acme.orders.v1.OrderService")`, the server's address.
- `keel_mock`: `async with keel_mock("acme.payments.v1.PaymentService") as mock:` a
  `keel.mock.MockServer` of services not built yet (keel.testing.mock).

Databases (keel.data):

- `keel_postgres`: a real PostgreSQL for the session (`keel.testing.postgres.PostgresServer`);
  skipped, naming the install command, where PostgreSQL is not installed, failed if `CI` is set;
- `keel_database_url`: the URL of a new, empty database, once on SQLite and once on
  PostgreSQL (a parametrized fixture: every test using it runs on both);
- `keel_database`: a `keel.data.Database` on such a database, migrated to head with the
  migrations of the service the test belongs to (the nearest folder above the test file with
  a pyproject.toml), disposed afterwards.

pytest-grpc's names map as: grpc_servicer → keel_services, grpc_server → keel_cluster,
grpc_addr → keel_addr, grpc_stub_cls + grpc_stub → keel_client(StubClass).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
import pytest_asyncio

from keel.runtime.client import ClientBase
from keel.runtime.config import Settings
from keel.runtime.service import ServiceBase
from keel.testing import Cluster, cluster
from keel.testing.mock import keel_mock  # noqa: F401 (the fixture, registered by this plugin)
from keel.testing.postgres import PostgresMissingError, PostgresServer, find_binaries

if TYPE_CHECKING:
    from keel.data import Database

_databases = itertools.count(1)


@pytest.fixture
def keel_services() -> Sequence[ServiceBase]:
    """The service implementations to serve: override this fixture in your tests."""
    raise pytest.UsageError(
        "override the keel_services fixture: return the service implementations to serve"
    )


@pytest.fixture
def keel_keys() -> Settings | None:
    """Settings whose keys the servers verify callers with, e.g. `Settings(jwt_secret=...)`:
    override this fixture to test with verification on (None: the process's settings)."""
    return None


@pytest_asyncio.fixture
async def keel_cluster(
    keel_services: Sequence[ServiceBase], keel_keys: Settings | None
) -> AsyncIterator[Cluster]:
    """The services of `keel_services`, each on its own loopback server."""
    async with cluster(*keel_services, keys=keel_keys) as running:
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


@pytest.fixture(scope="session")
def keel_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the test session, in a temporary folder, removed afterwards."""
    try:
        binaries = find_binaries()
    except PostgresMissingError as error:
        postgres_missing(error)
    with PostgresServer.start(binaries) as server:
        yield server


def postgres_missing(error: PostgresMissingError) -> NoReturn:
    """Skip the test (naming the install command), or fail it where `CI` is set."""
    if os.environ.get("CI"):
        pytest.fail(f"{error} (CI runs every PostgreSQL test)")
    pytest.skip(str(error))


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def keel_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An async SQLAlchemy URL of a new, empty database: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.sqlite3'}"
    server: PostgresServer = request.getfixturevalue("keel_postgres")
    return await server.create_database(f"test_{os.getpid()}_{next(_databases)}")


@pytest_asyncio.fixture
async def keel_database(
    keel_database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Database]:
    """The test's service's database, migrated to head: on SQLite, then on PostgreSQL."""
    from keel.data import Database, ServiceFolder, upgrade  # noqa: PLC0415 (SQLAlchemy)

    folder = next(p for p in Path(request.path).parents if (p / "pyproject.toml").is_file())
    db = Database(keel_database_url)
    await upgrade(db, ServiceFolder.at(folder))
    yield db
    await db.dispose()
