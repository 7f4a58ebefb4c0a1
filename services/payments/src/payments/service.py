"""acme.payments.v1.PaymentService: a simulated card processor with an in-memory ledger.

Authorization is idempotent per order id; capture and void are idempotent per payment.
"""

from __future__ import annotations

import itertools

import keel
from acme.payments.v1 import payments_keel, payments_pb2
from google.protobuf import timestamp_pb2

State = payments_pb2.PaymentState
DECLINED_TOKEN = "tok_decline"
UNAVAILABLE_TOKEN = "tok_unavailable"


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


class PaymentService(payments_keel.PaymentServiceBase):
    """Payments by id, and the authorization of each order."""

    def __init__(self) -> None:
        self.payments: dict[str, payments_pb2.Payment] = {}
        self.by_order: dict[str, str] = {}
        self._ids = itertools.count(1)

    def _get(self, payment_id: str) -> payments_pb2.Payment:
        payment = self.payments.get(payment_id)
        if payment is None:
            raise keel.errors.NotFound(f"payment {payment_id} does not exist")
        return payment

    def _move(
        self, payment: payments_pb2.Payment, allowed: set[int], to: int
    ) -> payments_pb2.Payment:
        if payment.state == to:
            return payment
        if payment.state not in allowed:
            raise keel.errors.FailedPrecondition(
                f"payment {payment.payment_id} is {State.Name(payment.state)}",
                reason="BAD_PAYMENT_STATE",
                metadata={"state": State.Name(payment.state)},
            )
        payment.state = to  # type: ignore[assignment]
        payment.update_time.CopyFrom(_now())
        return payment

    async def authorize_payment(
        self, request: payments_pb2.AuthorizePaymentRequest, context: keel.Context
    ) -> payments_pb2.AuthorizePaymentResponse:
        existing = self.by_order.get(request.order_id)
        if existing is not None:
            return payments_pb2.AuthorizePaymentResponse(payment=self.payments[existing])
        if request.payment_method_token == UNAVAILABLE_TOKEN:
            raise keel.errors.Unavailable("the card network is not answering", retry_after=1.0)
        declined = request.payment_method_token == DECLINED_TOKEN
        payment = payments_pb2.Payment(
            payment_id=f"pay_{next(self._ids)}",
            order_id=request.order_id,
            amount_cents=request.amount_cents,
            currency=request.currency,
            state=State.PAYMENT_STATE_DECLINED if declined else State.PAYMENT_STATE_AUTHORIZED,
            decline_reason="card declined" if declined else "",
            update_time=_now(),
        )
        self.payments[payment.payment_id] = payment
        self.by_order[request.order_id] = payment.payment_id
        return payments_pb2.AuthorizePaymentResponse(payment=payment)

    async def capture_payment(
        self, request: payments_pb2.CapturePaymentRequest, context: keel.Context
    ) -> payments_pb2.CapturePaymentResponse:
        payment = self._move(
            self._get(request.payment_id),
            {State.PAYMENT_STATE_AUTHORIZED},
            State.PAYMENT_STATE_CAPTURED,
        )
        return payments_pb2.CapturePaymentResponse(payment=payment)

    async def void_payment(
        self, request: payments_pb2.VoidPaymentRequest, context: keel.Context
    ) -> payments_pb2.VoidPaymentResponse:
        payment = self._move(
            self._get(request.payment_id),
            {State.PAYMENT_STATE_AUTHORIZED, State.PAYMENT_STATE_CAPTURED},
            State.PAYMENT_STATE_VOIDED,
        )
        return payments_pb2.VoidPaymentResponse(payment=payment)

    async def get_payment(
        self, request: payments_pb2.GetPaymentRequest, context: keel.Context
    ) -> payments_pb2.GetPaymentResponse:
        return payments_pb2.GetPaymentResponse(payment=self._get(request.payment_id))
