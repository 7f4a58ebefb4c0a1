"""Orders with the real catalog and payments services, each on its own server (discovery)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import grpc.aio
import keel
import pytest
from acme.catalog.v1 import catalog_keel, catalog_pb2
from acme.orders.v1 import orders_keel, orders_pb2
from acme.payments.v1 import payments_keel, payments_pb2
from catalog.service import CatalogService
from catalog.store import MemoryStore, seed
from keel.runtime import config
from orders.service import OrderService
from payments.service import PaymentService

State = orders_pb2.OrderState


QUICK = dataclasses.replace(config.current(), saga_backoff=(0.05, 0.1))
"""The sagas retry a failing peer briefly (the default waits seconds)."""


@pytest.fixture
def keel_services() -> Sequence[keel.ServiceBase]:
    return [OrderService(settings=QUICK), CatalogService(seed(MemoryStore())), PaymentService()]


@pytest.fixture
def orders(keel_client: Callable[[type[Any]], Any]) -> orders_keel.OrderServiceClient:
    client: orders_keel.OrderServiceClient = keel_client(orders_keel.OrderServiceClient)
    return client


@pytest.fixture
def catalog(keel_client: Callable[[type[Any]], Any]) -> catalog_keel.CatalogServiceClient:
    client: catalog_keel.CatalogServiceClient = keel_client(catalog_keel.CatalogServiceClient)
    return client


def _order(
    token: str = "tok_visa", quantity: int = 2, **extra: Any
) -> orders_pb2.CreateOrderRequest:
    return orders_pb2.CreateOrderRequest(
        customer_id="c_1",
        lines=[orders_pb2.OrderLine(product_id="p_kettle", quantity=quantity)],
        payment_method_token=token,
        **extra,
    )


async def _stock(catalog: catalog_keel.CatalogServiceClient) -> int:
    reply = await catalog.get_product(catalog_pb2.GetProductRequest(product_id="p_kettle"))
    return reply.product.stock


async def test_order_is_confirmed_and_paid(
    orders: orders_keel.OrderServiceClient, catalog: catalog_keel.CatalogServiceClient
) -> None:
    order = (await orders.create_order(_order())).order
    assert order.state == State.ORDER_STATE_CONFIRMED
    assert (order.total_cents, order.currency) == (2 * 2999, "EUR")
    assert order.payment.state == payments_pb2.PAYMENT_STATE_CAPTURED
    assert await _stock(catalog) == 23


async def test_retried_create_returns_the_first_order(
    orders: orders_keel.OrderServiceClient, catalog: catalog_keel.CatalogServiceClient
) -> None:
    first = (await orders.create_order(_order(request_id="r-1"))).order
    again = (await orders.create_order(_order(request_id="r-1"))).order
    assert again.order_id == first.order_id
    assert await _stock(catalog) == 23  # reserved once


async def test_the_calls_idempotency_key_is_the_request_id_when_none_is_given(
    orders: orders_keel.OrderServiceClient, catalog: catalog_keel.CatalogServiceClient
) -> None:
    """The gateway's Idempotency-Key header (idempotency-key metadata) makes a retried
    CreateOrder return the first order, as request_id does."""
    key = [("idempotency-key", "checkout-7")]
    first = (await orders.create_order(_order(), metadata=key)).order
    again = (await orders.create_order(_order(), metadata=key)).order
    assert again.order_id == first.order_id
    assert await _stock(catalog) == 23  # reserved once
    other = (
        await orders.create_order(_order(), metadata=[("idempotency-key", "checkout-8")])
    ).order
    assert other.order_id != first.order_id
    assert await _stock(catalog) == 21


async def test_declined_card_rejects_and_returns_stock(
    orders: orders_keel.OrderServiceClient, catalog: catalog_keel.CatalogServiceClient
) -> None:
    order = (await orders.create_order(_order("tok_decline"))).order
    assert order.state == State.ORDER_STATE_REJECTED
    assert order.payment.state == payments_pb2.PAYMENT_STATE_DECLINED
    assert await _stock(catalog) == 25


async def test_out_of_stock_is_failed_precondition(orders: orders_keel.OrderServiceClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.create_order(_order(quantity=26))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_payments_down_is_unavailable_and_returns_stock(
    orders: orders_keel.OrderServiceClient, catalog: catalog_keel.CatalogServiceClient
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.create_order(_order("tok_unavailable"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await _stock(catalog) == 25


async def test_cancel_refunds_payment_and_returns_stock(
    orders: orders_keel.OrderServiceClient,
    catalog: catalog_keel.CatalogServiceClient,
    keel_client: Callable[[type[Any]], Any],
) -> None:
    order = (await orders.create_order(_order())).order
    cancelled = (
        await orders.cancel_order(
            orders_pb2.CancelOrderRequest(order_id=order.order_id, reason="changed my mind")
        )
    ).order
    assert (cancelled.state, cancelled.reason) == (State.ORDER_STATE_CANCELLED, "changed my mind")
    assert cancelled.payment.state == payments_pb2.PAYMENT_STATE_REFUNDED
    assert await _stock(catalog) == 25
    payments: payments_keel.PaymentServiceClient = keel_client(payments_keel.PaymentServiceClient)
    payment = await payments.get_payment(
        payments_pb2.GetPaymentRequest(payment_id=order.payment.payment_id)
    )
    assert payment.payment.state == payments_pb2.PAYMENT_STATE_REFUNDED


async def test_a_rejected_order_says_why_and_limits_are_invalid_arguments(
    orders: orders_keel.OrderServiceClient, catalog: catalog_keel.CatalogServiceClient
) -> None:
    rejected = (await orders.create_order(_order("tok_decline"))).order
    assert rejected.state == State.ORDER_STATE_REJECTED
    assert rejected.reason == "authorize: DeclinedError: card declined"
    assert rejected.payment.state == payments_pb2.PAYMENT_STATE_DECLINED
    too_many = _order()
    too_many.lines.extend([orders_pb2.OrderLine(product_id="p_mug", quantity=1)] * 50)
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # ORDERS_MAX_LINES: 50
        await orders.create_order(too_many)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in keel.errors.from_rpc_error(caught.value).field_violations] == ["lines"]
    assert await _stock(catalog) == 25


async def test_watch_follows_the_order_until_shipped(
    orders: orders_keel.OrderServiceClient,
) -> None:
    order = (await orders.create_order(_order())).order
    states: list[int] = []

    async def watch() -> None:
        async for update in orders.watch_order(
            orders_pb2.WatchOrderRequest(order_id=order.order_id)
        ):
            states.append(update.order.state)

    watching = asyncio.ensure_future(watch())
    for _ in range(500):  # until the watch has delivered the current state
        if states:
            break
        await asyncio.sleep(0.01)
    shipped = await orders.mark_shipped(orders_pb2.MarkShippedRequest(order_id=order.order_id))
    assert shipped.order.state == State.ORDER_STATE_SHIPPED
    await asyncio.wait_for(watching, 5)
    assert states == [State.ORDER_STATE_CONFIRMED, State.ORDER_STATE_SHIPPED]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.cancel_order(orders_pb2.CancelOrderRequest(order_id=order.order_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_get_and_list_by_customer(orders: orders_keel.OrderServiceClient) -> None:
    made = [(await orders.create_order(_order(quantity=1))).order.order_id for _ in range(3)]
    page = await orders.list_orders(orders_pb2.ListOrdersRequest(customer_id="c_1", page_size=2))
    rest = await orders.list_orders(
        orders_pb2.ListOrdersRequest(customer_id="c_1", page_token=page.next_page_token)
    )
    assert [o.order_id for o in [*page.orders, *rest.orders]] == sorted(made)
    assert rest.next_page_token == ""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.get_order(orders_pb2.GetOrderRequest(order_id=made[0], customer_id="c_2"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
