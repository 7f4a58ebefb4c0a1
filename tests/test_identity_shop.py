"""Who is calling, through the gateway: the shop with keys configured at the edge and in every
service; two users each see, list and cancel only their own orders, and the user's verified
identity reaches the catalog through orders."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import jwt
import keel
import keel.testing
import pytest
from acme.catalog.v1 import catalog_pb2
from catalog.service import CatalogService
from catalog.store import MemoryStore, seed
from keel.gateway import Gateway, RouteTable
from keel.runtime.config import Settings
from orders.service import OrderService
from payments.service import PaymentService

from tests.conftest import REPO, serve_asgi
from tests.test_gateway import Reply, call

SECRET = "identity-test-secret-long-enough-for-hs256"
KEYS = Settings(jwt_secret=SECRET, jwt_audience="shop")


class SeeingCatalog(CatalogService):
    """Records who each stock reservation was made for, and by which service."""

    seen: ClassVar[list[tuple[str | None, bool, str, str]]] = []

    async def reserve_stock(
        self, request: catalog_pb2.ReserveStockRequest, context: keel.Context
    ) -> catalog_pb2.ReserveStockResponse:
        scope = str(context.claims.get("scope", ""))
        seen = (context.subject, context.verified, scope, context.calling_service)
        SeeingCatalog.seen.append(seen)
        return await super().reserve_stock(request, context)


def token(subject: str, **claims: Any) -> dict[str, str]:
    body = {"sub": subject, "aud": "shop", "exp": int(time.time()) + 300, **claims}
    return {"Authorization": f"Bearer {jwt.encode(body, SECRET, algorithm='HS256')}"}


@pytest.fixture
async def shop() -> AsyncIterator[str]:
    services = [SeeingCatalog(seed(MemoryStore())), OrderService(), PaymentService()]
    async with keel.testing.cluster(*services, keys=KEYS) as running:
        targets = {name: running.address(name) for name in running.servers}
        app = Gateway(RouteTable.from_generated(REPO / "gen"), targets=targets, settings=KEYS)
        async with serve_asgi(app) as url:
            yield url


async def _place(shop: str, user: str, customer: str | None = None) -> Reply:
    order = {
        "customerId": customer or user,
        "lines": [{"productId": "p_mug", "quantity": 1}],
        "paymentMethodToken": "tok_visa",
    }
    return await call(f"{shop}/v1/orders", "POST", order, headers=token(user))


async def test_two_users_each_see_only_their_own_orders(shop: str) -> None:
    alice = (await _place(shop, "alice")).body["order"]["orderId"]  # type: ignore[index]
    bob = (await _place(shop, "bob")).body["order"]["orderId"]  # type: ignore[index]
    as_alice, as_bob = token("alice"), token("bob")

    assert (await call(f"{shop}/v1/orders/{alice}", headers=as_alice)).status == 200
    theirs = await call(f"{shop}/v1/orders/{bob}", headers=as_alice)
    assert theirs.status == 404  # someone else's order is not found, as a missing one
    assert theirs.body["message"] == f"order {bob} does not exist"  # type: ignore[index]
    nested = await call(f"{shop}/v1/customers/bob/orders/{bob}", headers=as_alice)
    assert nested.status == 404

    listed = await call(f"{shop}/v1/customers/alice/orders", headers=as_alice)
    assert [o["orderId"] for o in listed.body] == [alice]  # type: ignore[attr-defined]
    other = await call(f"{shop}/v1/customers/bob/orders", headers=as_alice)
    assert other.status == 403
    assert other.body["details"][0]["reason"] == "NOT_YOUR_ORDERS"  # type: ignore[index]

    refused = await call(f"{shop}/v1/orders/{bob}:cancel", "POST", {}, headers=as_alice)
    assert refused.status == 404
    still = await call(f"{shop}/v1/orders/{bob}", headers=as_bob)
    assert still.body["order"]["state"] == "ORDER_STATE_CONFIRMED"  # type: ignore[index]
    mine = await call(f"{shop}/v1/orders/{bob}:cancel", "POST", {}, headers=as_bob)
    assert mine.body["order"]["state"] == "ORDER_STATE_CANCELLED"  # type: ignore[index]


async def test_an_order_for_another_customer_is_refused(shop: str) -> None:
    reply = await _place(shop, "alice", customer="bob")
    assert reply.status == 403
    assert reply.body["code"] == 7  # type: ignore[index]
    listed = await call(f"{shop}/v1/customers/bob/orders", headers=token("bob"))
    assert listed.body == []


async def test_the_verified_user_reaches_the_catalog_through_orders(shop: str) -> None:
    SeeingCatalog.seen.clear()
    reply = await call(
        f"{shop}/v1/orders",
        "POST",
        {
            "customerId": "carol",
            "lines": [{"productId": "p_mug", "quantity": 1}],
            "paymentMethodToken": "tok_visa",
        },
        headers={**token("carol", scope="shop.buy"), "Grpc-Metadata-X-Keel-Subject": "admin"},
    )
    assert reply.status == 200
    assert SeeingCatalog.seen == [("carol", True, "shop.buy", "acme.orders.v1.OrderService")]


async def test_a_public_method_with_a_bad_token_is_refused_at_the_edge(shop: str) -> None:
    expired = token("alice", exp=int(time.time()) - 3600)
    reply = await call(f"{shop}/v1/products/p_mug", headers=expired)
    assert reply.status == 401
    assert 'error="invalid_token"' in reply.headers["www-authenticate"]
    assert (await call(f"{shop}/v1/products/p_mug", headers=token("alice"))).status == 200
    assert (await call(f"{shop}/v1/products/p_mug")).status == 200
