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
LOADED = 10
"""Deadline of the authorizations here (AuthorizePayment's own 3 s is short on a loaded
machine)."""


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


def _error_info(error: grpc.aio.AioRpcError) -> Any:
    return keel.errors.from_rpc_error(error)


async def test_authorize_capture_refund_and_void(payments: Client) -> None:
    authorized = (await payments.authorize_payment(_authorize("o_1"), timeout=LOADED)).payment
    assert authorized.state == payments_pb2.PAYMENT_STATE_AUTHORIZED
    again = (await payments.authorize_payment(_authorize("o_1"), timeout=LOADED)).payment
    assert again.payment_id == authorized.payment_id  # one authorization per order
    by_id = payments_pb2.VoidPaymentRequest(payment_id=authorized.payment_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # not captured: nothing to refund
        await payments.refund_payment(
            payments_pb2.RefundPaymentRequest(payment_id=authorized.payment_id)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = _error_info(caught.value)
    assert (info.reason, info.metadata["use"]) == ("PAYMENT_NOT_CAPTURED", "VoidPayment")
    captured = await payments.capture_payment(
        payments_pb2.CapturePaymentRequest(payment_id=authorized.payment_id)
    )
    assert captured.payment.state == payments_pb2.PAYMENT_STATE_CAPTURED
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # captured: a refund, not a void
        await payments.void_payment(by_id)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = _error_info(caught.value)
    assert (info.reason, info.domain) == ("PAYMENT_CAPTURED", "acme.payments")
    assert info.metadata["use"] == "RefundPayment"
    assert info.metadata["state"] == "PAYMENT_STATE_CAPTURED"
    refunded = await payments.refund_payment(payments_pb2.RefundPaymentRequest(order_id="o_1"))
    assert refunded.payment.payment_id == authorized.payment_id
    assert refunded.payment.state == payments_pb2.PAYMENT_STATE_REFUNDED
    assert (await payments.void_payment(by_id)).payment.state == payments_pb2.PAYMENT_STATE_REFUNDED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await payments.capture_payment(
            payments_pb2.CapturePaymentRequest(payment_id=authorized.payment_id)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _error_info(caught.value).reason == "BAD_PAYMENT_STATE"
    other = (await payments.authorize_payment(_authorize("o_2"), timeout=LOADED)).payment
    voided = await payments.void_payment(payments_pb2.VoidPaymentRequest(order_id="o_2"))
    assert (voided.payment.payment_id, voided.payment.state) == (
        other.payment_id,
        payments_pb2.PAYMENT_STATE_VOIDED,
    )


async def test_void_and_refund_name_a_payment_or_an_order(payments: Client) -> None:
    calls = (
        payments.void_payment(payments_pb2.VoidPaymentRequest()),
        payments.void_payment(payments_pb2.VoidPaymentRequest(payment_id="pay_1", order_id="o_1")),
        payments.refund_payment(payments_pb2.RefundPaymentRequest()),
    )
    for call in calls:  # neither, or both
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # an order without a payment
        await payments.refund_payment(payments_pb2.RefundPaymentRequest(order_id="o_none"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_keyed_calls_take_effect_once(payments: Client) -> None:
    key = [("idempotency-key", "saga-1/authorize")]
    first = (
        await payments.authorize_payment(_authorize("o_k"), metadata=key, timeout=LOADED)
    ).payment
    again = (
        await payments.authorize_payment(_authorize("o_k"), metadata=key, timeout=LOADED)
    ).payment
    assert again == first
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the key, with another request
        await payments.authorize_payment(_authorize("o_other"), metadata=key, timeout=LOADED)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    undo = [("idempotency-key", "saga-1/authorize/compensate")]
    by_order = payments_pb2.VoidPaymentRequest(order_id="o_k")
    voided = (await payments.void_payment(by_order, metadata=undo)).payment
    assert (voided.payment_id, voided.state) == (
        first.payment_id,
        payments_pb2.PAYMENT_STATE_VOIDED,
    )
    assert (await payments.void_payment(by_order, metadata=undo)).payment == voided
    # Voided before it was authorized: a late authorization of the order authorizes nothing.
    early = (
        await payments.void_payment(payments_pb2.VoidPaymentRequest(order_id="o_late"))
    ).payment
    assert (early.state, early.amount_cents) == (payments_pb2.PAYMENT_STATE_VOIDED, 0)
    late = (await payments.authorize_payment(_authorize("o_late"), timeout=LOADED)).payment
    assert (late.payment_id, late.state) == (early.payment_id, payments_pb2.PAYMENT_STATE_VOIDED)


async def test_declined_card(payments: Client) -> None:
    payment = (
        await payments.authorize_payment(_authorize("o_2", "tok_decline"), timeout=LOADED)
    ).payment
    assert payment.state == payments_pb2.PAYMENT_STATE_DECLINED
    assert payment.decline_reason == "card declined"


async def test_unknown_payment_and_unavailable_network(payments: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await payments.get_payment(payments_pb2.GetPaymentRequest(payment_id="pay_404"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await payments.authorize_payment(_authorize("o_3", "tok_unavailable"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
