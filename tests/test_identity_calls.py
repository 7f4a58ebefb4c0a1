"""Who is calling, straight to a service's gRPC port: with keys configured, a service takes the
caller only from a bearer token it verifies; a claimed identity without one, an expired or
badly signed token, are refused with UNAUTHENTICATED and an ErrorInfo saying why."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import keel
import keel.testing
import pytest
from acme.orders.v1 import orders_keel, orders_pb2
from catalog.service import CatalogService
from catalog.store import MemoryStore, seed
from cryptography.hazmat.primitives.asymmetric import rsa
from keel.runtime.config import Settings
from keel.runtime.identity import TokenVerifier
from orders.service import OrderService
from payments.service import PaymentService

SECRET = "identity-test-secret-long-enough-for-hs256"
KEYS = Settings(jwt_secret=SECRET, jwt_audience="shop")
Metadata = list[tuple[str, str]]


def bearer(subject: str, key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> Metadata:
    body = {"sub": subject, "aud": "shop", "exp": int(time.time()) + 300, **claims}
    return [("authorization", f"Bearer {jwt.encode(body, key, algorithm=algorithm)}")]


async def _running(keys: Settings) -> AsyncIterator[tuple[orders_keel.OrderServiceClient, str]]:
    services = [OrderService(), CatalogService(seed(MemoryStore())), PaymentService()]
    async with keel.testing.cluster(*services, keys=keys) as running:
        orders = running.client(orders_keel.OrderServiceClient)
        placed = await orders.create_order(
            orders_pb2.CreateOrderRequest(
                customer_id="alice",
                lines=[orders_pb2.OrderLine(product_id="p_mug", quantity=1)],
                payment_method_token="tok_visa",
            ),
            metadata=bearer("alice"),
        )
        yield orders, placed.order.order_id


@pytest.fixture
async def shop() -> AsyncIterator[tuple[orders_keel.OrderServiceClient, str]]:
    async for running in _running(KEYS):
        yield running


async def _refused(call: Any, reason: str) -> keel.errors.KeelError:
    with pytest.raises(keel.errors.Unauthenticated) as caught:
        await call
    assert (caught.value.reason, caught.value.domain) == (reason, "keel")
    return caught.value


# Metadata is made when each test runs (tokens made at collection expire in a long suite).
@pytest.mark.parametrize(
    "forged",
    [
        lambda: [("x-keel-subject", "alice")],
        lambda: [("x-keel-claims", json.dumps({"sub": "alice"}))],
        lambda: [("x-keel-subject", "alice"), *bearer("mallory")],
        lambda: [
            ("x-keel-claims", json.dumps({"sub": "mallory", "scope": "admin"})),
            *bearer("mallory"),
        ],
    ],
    ids=["subject-alone", "claims-alone", "subject-over-a-token", "claims-over-a-token"],
)
async def test_a_forged_identity_is_refused(
    shop: tuple[orders_keel.OrderServiceClient, str], forged: Callable[[], Metadata]
) -> None:
    orders, order_id = shop
    request = orders_pb2.GetOrderRequest(order_id=order_id)
    await _refused(orders.get_order(request, metadata=forged()), "UNVERIFIED_IDENTITY")


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        (lambda: bearer("alice", exp=int(time.time()) - 3600), "Signature has expired"),
        (
            lambda: bearer("alice", key="another-secret-that-is-long-enough-too"),
            "Signature verification",
        ),
        (lambda: bearer("alice", aud="elsewhere"), "Audience doesn't match"),
        (lambda: [("authorization", "Basic YWxpY2U6cHc=")], "must be a bearer token"),
        (lambda: [("authorization", "Bearer not-a-jwt")], "not valid"),
        (lambda: [*bearer("alice"), *bearer("mallory")], "more than one authorization"),
    ],
    ids=["expired", "wrong-key", "wrong-audience", "not-bearer", "garbage", "two-tokens"],
)
async def test_a_token_that_does_not_verify_is_refused(
    shop: tuple[orders_keel.OrderServiceClient, str], metadata: Callable[[], Metadata], says: str
) -> None:
    orders, order_id = shop
    request = orders_pb2.GetOrderRequest(order_id=order_id)
    refused = await _refused(orders.get_order(request, metadata=metadata()), "INVALID_TOKEN")
    assert says in refused.details()


async def test_a_stream_with_an_expired_token_is_refused(
    shop: tuple[orders_keel.OrderServiceClient, str],
) -> None:
    orders, order_id = shop
    expired = bearer("alice", exp=int(time.time()) - 3600)
    stream = orders.watch_order(orders_pb2.WatchOrderRequest(order_id=order_id), metadata=expired)
    await _refused(anext(aiter(stream)), "INVALID_TOKEN")


async def test_verified_users_act_only_on_their_own_orders(
    shop: tuple[orders_keel.OrderServiceClient, str],
) -> None:
    orders, order_id = shop
    request = orders_pb2.GetOrderRequest(order_id=order_id)
    assert (await orders.get_order(request, metadata=bearer("alice"))).order.order_id == order_id
    with pytest.raises(keel.errors.NotFound):
        await orders.get_order(request, metadata=bearer("mallory"))
    watch = orders_pb2.WatchOrderRequest(order_id=order_id)
    with pytest.raises(keel.errors.NotFound):
        await anext(aiter(orders.watch_order(watch, metadata=bearer("mallory"))))
    first = await anext(aiter(orders.watch_order(watch, metadata=bearer("alice"))))
    assert first.order.customer_id == "alice"
    cancel = orders_pb2.CancelOrderRequest(order_id=order_id)
    with pytest.raises(keel.errors.NotFound):
        await orders.cancel_order(cancel, metadata=bearer("mallory"))
    listing = orders_pb2.ListOrdersRequest(customer_id="alice")
    with pytest.raises(keel.errors.PermissionDenied):
        await orders.list_orders(listing, metadata=bearer("mallory"))
    mine = await orders.list_orders(listing, metadata=bearer("alice"))
    assert [o.order_id for o in mine.orders] == [order_id]


async def test_a_call_without_identity_is_refused_where_the_proto_asks_for_a_user(
    shop: tuple[orders_keel.OrderServiceClient, str],
) -> None:
    """OrderService is ACCESS_AUTHENTICATED: without a token nobody's orders can be read, or
    anyone who reaches the port could read everyone's (methods without a policy serve such
    calls: tests/test_identity_policy.py)."""
    orders, order_id = shop
    error = await _refused(
        orders.get_order(orders_pb2.GetOrderRequest(order_id=order_id)), "TOKEN_REQUIRED"
    )
    assert "bearer token" in error.message


async def test_a_token_just_past_its_expiry_is_within_the_leeway() -> None:
    token = jwt.encode({"sub": "a", "exp": int(time.time()) - 10}, SECRET, algorithm="HS256")
    lenient = TokenVerifier(Settings(jwt_secret=SECRET), leeway=30)
    assert lenient.verify(token)["sub"] == "a"
    assert lenient.verify(token)["sub"] == "a"  # remembered, still within the leeway
    with pytest.raises(jwt.ExpiredSignatureError):
        TokenVerifier(Settings(jwt_secret=SECRET)).verify(token)


async def test_services_verify_with_a_jwks_too(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    keys = Settings(jwks_file=str(jwks), jwt_audience="shop")
    signed = bearer("alice", key=private, algorithm="RS256")
    async with keel.testing.cluster(OrderService(), keys=keys) as running:
        orders = running.client(orders_keel.OrderServiceClient)
        listing = orders_pb2.ListOrdersRequest(customer_id="alice")
        assert (await orders.list_orders(listing, metadata=signed)).orders == []
        forged = bearer("alice")  # HS256 with a secret the services do not have
        await _refused(orders.list_orders(listing, metadata=forged), "INVALID_TOKEN")


async def test_without_keys_nothing_is_verified() -> None:
    async for orders, order_id in _running(Settings()):
        request = orders_pb2.GetOrderRequest(order_id=order_id)
        expired = bearer("alice", exp=int(time.time()) - 3600)
        assert (await orders.get_order(request, metadata=expired)).order.order_id == order_id
        # Development: the header is read as sent, but proves nothing, so restricts nothing.
        forged = [("x-keel-subject", "mallory")]
        assert (await orders.get_order(request, metadata=forged)).order.customer_id == "alice"
