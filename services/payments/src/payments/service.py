"""acme.payments.v1.PaymentService over the payments domain: proto in, proto out.

A simulated card processor: authorization is idempotent per order id (kept in the service's
database, so across restarts and workers); capture and void are idempotent per payment.

AuthorizePayment, CapturePayment and VoidPayment are keyed (keel.idempotency): a call carrying
an `idempotency-key` (an order saga's step) has its effect once, stored with the key in the
same transaction; a repeat gets the first answer (or first final error) back.

VoidPayment takes back what the payment got to: an AUTHORIZED payment is voided, a CAPTURED
one refunded (both end VOIDED: the proto has no RefundPayment or REFUNDED yet). Its
`payment_id` may name the order instead, as `order:<order id>` (a compensation that may not
know the payment id): the order's payment is voided or refunded, and an order without one
gets a VOIDED payment of 0, so that a late authorization for it authorizes nothing.
"""

from __future__ import annotations

import keel
import keel.idempotency
from acme.payments.v1 import payments_keel, payments_pb2
from google.protobuf import timestamp_pb2

from payments.domain import (
    BadStateError,
    ConflictError,
    NetworkUnavailableError,
    NotFoundError,
    Payment,
    Payments,
    State,
)
from payments.store import MemoryStore, SqlStore

BY_ORDER = "order:"
"""VoidPayment's payment_id prefix naming an order instead of a payment."""

STATES = {
    State.AUTHORIZED: payments_pb2.PAYMENT_STATE_AUTHORIZED,
    State.CAPTURED: payments_pb2.PAYMENT_STATE_CAPTURED,
    State.VOIDED: payments_pb2.PAYMENT_STATE_VOIDED,
    State.DECLINED: payments_pb2.PAYMENT_STATE_DECLINED,
}


def to_proto(payment: Payment) -> payments_pb2.Payment:
    updated = timestamp_pb2.Timestamp()
    updated.FromDatetime(payment.updated)
    return payments_pb2.Payment(
        payment_id=payment.payment_id,
        order_id=payment.order_id,
        amount_cents=payment.amount_cents,
        currency=payment.currency,
        state=STATES[payment.state],
        decline_reason=payment.decline_reason,
        update_time=updated,
    )


class PaymentService(payments_keel.PaymentServiceBase):
    """Payments over gRPC, on `store` (default: a throwaway database, for tests)."""

    def __init__(self, store: SqlStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.payments = Payments(self.store)

    async def __keel_close__(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            await close()

    async def _move(
        self,
        request: payments_pb2.CapturePaymentRequest | payments_pb2.VoidPaymentRequest,
        context: keel.Context,
        *,
        void: bool,
    ) -> payments_pb2.Payment:
        payment_id = request.payment_id
        try:
            async with keel.idempotency.call(
                self.store.db, context, request, payments_pb2.Payment
            ) as call:
                if call.replay is not None:
                    return call.replay
                payments = Payments(self.store.joined(call.session))
                if void and payment_id.startswith(BY_ORDER):
                    payment = await payments.settle_order(payment_id.removeprefix(BY_ORDER))
                elif void:
                    payment = await payments.void_or_refund(payment_id)
                else:
                    payment = await payments.capture(payment_id)
                return call.respond(to_proto(payment))
        except NotFoundError:
            raise keel.errors.NotFound(f"payment {payment_id} does not exist") from None
        except BadStateError as error:
            raise keel.errors.FailedPrecondition(
                str(error),
                reason="BAD_PAYMENT_STATE",
                metadata={"state": payments_pb2.PaymentState.Name(STATES[error.payment.state])},
            ) from None
        except ConflictError:
            raise keel.errors.Aborted(
                f"payment {payment_id} changed meanwhile: try again"
            ) from None

    async def authorize_payment(
        self, request: payments_pb2.AuthorizePaymentRequest, context: keel.Context
    ) -> payments_pb2.AuthorizePaymentResponse:
        try:
            async with keel.idempotency.call(
                self.store.db, context, request, payments_pb2.AuthorizePaymentResponse
            ) as call:
                if call.replay is not None:
                    return call.replay
                payment = await Payments(self.store.joined(call.session)).authorize(
                    request.order_id,
                    request.amount_cents,
                    request.currency,
                    request.payment_method_token,
                )
                return call.respond(
                    payments_pb2.AuthorizePaymentResponse(payment=to_proto(payment))
                )
        except NetworkUnavailableError as error:
            raise keel.errors.Unavailable(str(error), retry_after=1.0) from None
        except ConflictError:
            raise keel.errors.Aborted(
                f"order {request.order_id} is being authorized by another call: try again"
            ) from None

    async def capture_payment(
        self, request: payments_pb2.CapturePaymentRequest, context: keel.Context
    ) -> payments_pb2.CapturePaymentResponse:
        payment = await self._move(request, context, void=False)
        return payments_pb2.CapturePaymentResponse(payment=payment)

    async def void_payment(
        self, request: payments_pb2.VoidPaymentRequest, context: keel.Context
    ) -> payments_pb2.VoidPaymentResponse:
        payment = await self._move(request, context, void=True)
        return payments_pb2.VoidPaymentResponse(payment=payment)

    async def get_payment(
        self, request: payments_pb2.GetPaymentRequest, context: keel.Context
    ) -> payments_pb2.GetPaymentResponse:
        try:
            payment = await self.payments.get(request.payment_id)
        except NotFoundError:
            raise keel.errors.NotFound(f"payment {request.payment_id} does not exist") from None
        return payments_pb2.GetPaymentResponse(payment=to_proto(payment))
