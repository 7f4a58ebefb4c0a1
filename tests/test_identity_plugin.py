"""The pytest plugin with verification on: `keel_keys` makes every server verify its callers,
`keel.testing.bearer` mints the tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keel
import keel.testing
import pytest
from acme.orders.v1 import orders_keel, orders_pb2
from keel.runtime.config import Settings
from orders.service import OrderService

SECRET = "plugin-identity-secret-long-enough-for-hs256"


@pytest.fixture
def keel_services() -> Sequence[keel.ServiceBase]:
    return [OrderService()]


@pytest.fixture
def keel_keys() -> Settings:
    return Settings(jwt_secret=SECRET)


async def test_servers_of_the_plugin_verify_their_callers(
    keel_client: Callable[[type[Any]], Any],
) -> None:
    orders: orders_keel.OrderServiceClient = keel_client(orders_keel.OrderServiceClient)
    listing = orders_pb2.ListOrdersRequest(customer_id="alice")
    mine = await orders.list_orders(listing, metadata=keel.testing.bearer("alice", SECRET))
    assert list(mine.orders) == []
    with pytest.raises(keel.errors.PermissionDenied):
        await orders.list_orders(listing, metadata=keel.testing.bearer("bob", SECRET))
    expired = keel.testing.bearer("alice", SECRET, expires_in=-3600)
    with pytest.raises(keel.errors.Unauthenticated):
        await orders.list_orders(listing, metadata=expired)
