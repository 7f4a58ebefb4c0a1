"""keel.testing: the pytest fixtures, the cluster helper, and pytest-grpc compatibility."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import keel
import keel.testing
import pytest
from keel.testing import pytest_grpc

from tests.servers.kitchen_server import Front, Kitchen, Pantry, kitchen_keel, kitchen_pb2


@pytest.fixture
def keel_services() -> Sequence[keel.ServiceBase]:
    # Front calls the pantry with PantryServiceClient.connect(): discovery finds it.
    return [Front(pantry_target="discover"), Pantry()]


async def test_fixtures_serve_and_connect(keel_client: Callable[[type[Any]], Any]) -> None:
    kitchen: kitchen_keel.KitchenServiceClient = keel_client(kitchen_keel.KitchenServiceClient)
    pantry: kitchen_keel.PantryServiceClient = keel_client(kitchen_keel.PantryServiceClient)
    reply = await kitchen.cook(kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name="stew")))
    assert reply.dish.name == "stew"
    # Cook reached the pantry through discovery; this is the pantry's second count.
    assert (await pantry.count(kitchen_pb2.CountRequest())).count == 2


def test_addresses_are_loopback(keel_addr: Callable[[str], str]) -> None:
    assert keel_addr("kitchen.v1.PantryService").startswith("127.0.0.1:")


async def test_cluster_restores_discovery_afterwards() -> None:
    from keel.runtime import config  # noqa: PLC0415

    before = config.current()
    async with keel.testing.cluster(Pantry()) as running:
        assert "KITCHEN_V1_PANTRYSERVICE" in config.current().targets
        client = running.client(kitchen_keel.PantryServiceClient)
        assert (await client.count(kitchen_pb2.CountRequest())).count == 1
    assert config.current() is before


# pytest-grpc's own fixtures (grpc_server, grpc_stub, ...) with a Keel service.
from kitchen.v1 import kitchen_pb2_grpc  # noqa: E402


@pytest.fixture(scope="module")
def grpc_addr() -> str:
    # pytest-grpc 0.8.0's own grpc_addr leaves its probe socket open (a ResourceWarning).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture(scope="module")
def grpc_add_to_server() -> Any:
    return pytest_grpc.add_to_server


@pytest.fixture(scope="module")
def grpc_servicer() -> keel.ServiceBase:
    return Kitchen()


@pytest.fixture(scope="module")
def grpc_stub_cls() -> Any:
    return kitchen_pb2_grpc.KitchenServiceStub


def test_keel_service_under_pytest_grpc(grpc_stub: Any) -> None:
    reply = grpc_stub.Cook(kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name="soup")))
    assert reply.dish.name == "soup"

    def stock() -> Iterator[kitchen_pb2.StockRequest]:
        yield kitchen_pb2.StockRequest(quantity=2)
        yield kitchen_pb2.StockRequest(quantity=3)

    assert grpc_stub.Stock(stock()).total == 5
    with pytest.raises(grpc.RpcError) as caught:
        grpc_stub.Cook(kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name="invalid")))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        grpc_stub.GetHTTPStatus(kitchen_pb2.GetHTTPStatusRequest())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
