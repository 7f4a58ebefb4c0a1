"""The proto's auth policy holds at the service too, not only at the gateway: with keys
configured, a method marked with `scopes` refuses a token without them (PERMISSION_DENIED,
MISSING_SCOPE) and a call without a token (UNAUTHENTICATED, TOKEN_REQUIRED); a service marked
ACCESS_AUTHENTICATED refuses a call without a token; methods with no policy (internal ones,
called by other services without a user) and public ones still serve token-less calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keel
import keel.testing
import pytest
from acme.catalog.v1 import catalog_keel
from acme.orders.v1 import orders_keel, orders_pb2
from acme.payments.v1 import payments_keel, payments_pb2
from keel.runtime.config import Settings
from keel.runtime.identity import policy
from keel.runtime.service import ServiceBase
from keel.runtime.spec import Access
from orders.service import OrderService
from payments.service import PaymentService

SECRET = "policy-test-secret-long-enough-for-hs256"


def token(subject: str, **claims: Any) -> list[tuple[str, str]]:
    return keel.testing.bearer(subject, SECRET, **claims)


@pytest.fixture
def keel_keys() -> Settings:
    return Settings(jwt_secret=SECRET)


@pytest.fixture
def keel_services() -> Sequence[ServiceBase]:
    return [PaymentService(), OrderService()]


async def test_a_scoped_method_refuses_a_token_without_its_scope(keel_client: Any) -> None:
    payments = keel_client(payments_keel.PaymentServiceClient)
    request = payments_pb2.GetPaymentRequest(payment_id="pay_unknown")
    with pytest.raises(keel.errors.PermissionDenied) as caught:
        await payments.get_payment(request, metadata=token("alice", scope="orders.read"))
    assert (caught.value.reason, caught.value.domain) == ("MISSING_SCOPE", "keel")
    assert caught.value.metadata["scopes"] == "payments.read"


async def test_a_scoped_method_admits_a_token_with_its_scope(keel_client: Any) -> None:
    payments = keel_client(payments_keel.PaymentServiceClient)
    request = payments_pb2.GetPaymentRequest(payment_id="pay_unknown")
    for granted in ({"scope": "orders.read payments.read"}, {"scp": ["payments.read"]}):
        # Admitted: the handler runs and finds no such payment.
        with pytest.raises(keel.errors.NotFound):
            await payments.get_payment(request, metadata=token("bob", **granted))


async def test_a_scoped_method_refuses_a_call_without_a_token(keel_client: Any) -> None:
    payments = keel_client(payments_keel.PaymentServiceClient)
    with pytest.raises(keel.errors.Unauthenticated) as caught:
        await payments.get_payment(payments_pb2.GetPaymentRequest(payment_id="pay_unknown"))
    assert caught.value.reason == "TOKEN_REQUIRED"


async def test_an_authenticated_service_refuses_a_call_without_a_token(keel_client: Any) -> None:
    orders = keel_client(orders_keel.OrderServiceClient)
    with pytest.raises(keel.errors.Unauthenticated) as caught:
        await orders.list_orders(orders_pb2.ListOrdersRequest(customer_id="alice"))
    assert caught.value.reason == "TOKEN_REQUIRED"
    listed = await orders.list_orders(
        orders_pb2.ListOrdersRequest(customer_id="alice"), metadata=token("alice")
    )
    assert list(listed.orders) == []


async def test_a_method_without_policy_serves_a_service_call_without_a_user(
    keel_client: Any,
) -> None:
    """AuthorizePayment has no policy: orders calls it for its own work (a saga), no user."""
    payments = keel_client(payments_keel.PaymentServiceClient)
    authorized = await payments.authorize_payment(
        payments_pb2.AuthorizePaymentRequest(
            order_id="o_policy", amount_cents=100, currency="EUR", payment_method_token="tok_visa"
        )
    )
    assert authorized.payment.order_id == "o_policy"


async def test_without_keys_nothing_is_enforced() -> None:
    """Development (no keys): the scoped method serves a call without a token, as the gateway
    lets it through unauthenticated."""
    async with keel.testing.cluster(PaymentService()) as running:
        payments = running.client(payments_keel.PaymentServiceClient)
        with pytest.raises(keel.errors.NotFound):
            await payments.get_payment(payments_pb2.GetPaymentRequest(payment_id="pay_unknown"))


def test_the_policy_is_the_methods_else_its_services() -> None:
    catalog = catalog_keel.CatalogServiceBase.__keel_service__
    orders = orders_keel.OrderServiceBase.__keel_service__
    assert policy(catalog.method("CreateProduct"), catalog).scopes == ("catalog.write",)
    assert policy(catalog.method("GetProduct"), catalog).access is Access.PUBLIC
    assert policy(catalog.method("ReserveStock"), catalog).access is Access.UNSPECIFIED
    assert policy(orders.method("ListOrders"), orders).access is Access.AUTHENTICATED


async def test_the_warehouse_ships_with_its_scope_and_a_customer_cannot(keel_client: Any) -> None:
    """MarkShipped (internal, gRPC only) needs orders.ship: the OrderService-wide
    ACCESS_AUTHENTICATED would otherwise let any customer's token ship anyone's order."""
    orders = keel_client(orders_keel.OrderServiceClient)
    request = orders_pb2.MarkShippedRequest(order_id="o_unknown")
    with pytest.raises(keel.errors.Unauthenticated) as unauthenticated:
        await orders.mark_shipped(request)
    assert unauthenticated.value.reason == "TOKEN_REQUIRED"
    with pytest.raises(keel.errors.PermissionDenied) as denied:
        await orders.mark_shipped(request, metadata=token("mallory"))
    assert denied.value.metadata["scopes"] == "orders.ship"
    with pytest.raises(keel.errors.NotFound):  # admitted: the handler looks the order up
        await orders.mark_shipped(request, metadata=token("warehouse", scope="orders.ship"))
