"""Contract tests of payments through its generated client and a real server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
import grpc.aio
import keel
import pytest
from acme.payments.v1 import payments_keel, payments_pb2
from payments.service import PaymentService

Client = payments_keel.PaymentServiceClient


@pytest.fixture
def keel_services() -> Sequence[keel.ServiceBase]:
    return [PaymentService()]


@pytest.fixture
def payments(keel_client: Callable[[type[Any]], Any]) -> Client:
    client: Client = keel_client(Client)
    return client


def _authorize(order_id: str, token: str = "tok_visa") -> payments_pb2.AuthorizePaymentRequest:
    return payments_pb2.AuthorizePaymentRequest(
        order_id=order_id, amount_cents=1000, currency="EUR", payment_method_token=token
    )


async def test_authorize_capture_void(payments: Client) -> None:
    authorized = (await payments.authorize_payment(_authorize("o_1"))).payment
    assert authorized.state == payments_pb2.PAYMENT_STATE_AUTHORIZED
    again = (await payments.authorize_payment(_authorize("o_1"))).payment
    assert again.payment_id == authorized.payment_id  # one authorization per order
    captured = await payments.capture_payment(
        payments_pb2.CapturePaymentRequest(payment_id=authorized.payment_id)
    )
    assert captured.payment.state == payments_pb2.PAYMENT_STATE_CAPTURED
    voided = await payments.void_payment(
        payments_pb2.VoidPaymentRequest(payment_id=authorized.payment_id)
    )
    assert voided.payment.state == payments_pb2.PAYMENT_STATE_VOIDED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await payments.capture_payment(
            payments_pb2.CapturePaymentRequest(payment_id=authorized.payment_id)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_keyed_calls_take_effect_once(payments: Client) -> None:
    key = [("idempotency-key", "saga-1/authorize")]
    first = (await payments.authorize_payment(_authorize("o_k"), metadata=key)).payment
    again = (await payments.authorize_payment(_authorize("o_k"), metadata=key)).payment
    assert again == first
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the key, with another request
        await payments.authorize_payment(_authorize("o_other"), metadata=key)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    undo = [("idempotency-key", "saga-1/authorize/compensate")]
    by_order = payments_pb2.VoidPaymentRequest(payment_id="order:o_k")
    voided = (await payments.void_payment(by_order, metadata=undo)).payment
    assert (voided.payment_id, voided.state) == (
        first.payment_id,
        payments_pb2.PAYMENT_STATE_VOIDED,
    )
    assert (await payments.void_payment(by_order, metadata=undo)).payment == voided


async def test_declined_card(payments: Client) -> None:
    payment = (await payments.authorize_payment(_authorize("o_2", "tok_decline"))).payment
    assert payment.state == payments_pb2.PAYMENT_STATE_DECLINED
    assert payment.decline_reason == "card declined"


async def test_unknown_payment_and_unavailable_network(payments: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await payments.get_payment(payments_pb2.GetPaymentRequest(payment_id="pay_404"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await payments.authorize_payment(_authorize("o_3", "tok_unavailable"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
