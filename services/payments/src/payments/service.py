"""acme.payments.v1.PaymentService over the payments domain: proto in, proto out.

A simulated card processor: authorization is idempotent per order id (kept in the service's
database, so across restarts and workers); capture and void are idempotent per payment.
"""

from __future__ import annotations

import keel
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
    Store,
)
from payments.store import MemoryStore

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

    def __init__(self, store: Store | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.payments = Payments(self.store)

    async def __keel_close__(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            await close()

    async def _move(self, payment_id: str, *, void: bool) -> payments_pb2.Payment:
        try:
            if void:
                return to_proto(await self.payments.void(payment_id))
            return to_proto(await self.payments.capture(payment_id))
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
            payment = await self.payments.authorize(
                request.order_id,
                request.amount_cents,
                request.currency,
                request.payment_method_token,
            )
        except NetworkUnavailableError as error:
            raise keel.errors.Unavailable(str(error), retry_after=1.0) from None
        except ConflictError:
            raise keel.errors.Aborted(
                f"order {request.order_id} is being authorized by another call: try again"
            ) from None
        return payments_pb2.AuthorizePaymentResponse(payment=to_proto(payment))

    async def capture_payment(
        self, request: payments_pb2.CapturePaymentRequest, context: keel.Context
    ) -> payments_pb2.CapturePaymentResponse:
        payment = await self._move(request.payment_id, void=False)
        return payments_pb2.CapturePaymentResponse(payment=payment)

    async def void_payment(
        self, request: payments_pb2.VoidPaymentRequest, context: keel.Context
    ) -> payments_pb2.VoidPaymentResponse:
        payment = await self._move(request.payment_id, void=True)
        return payments_pb2.VoidPaymentResponse(payment=payment)

    async def get_payment(
        self, request: payments_pb2.GetPaymentRequest, context: keel.Context
    ) -> payments_pb2.GetPaymentResponse:
        try:
            payment = await self.payments.get(request.payment_id)
        except NotFoundError:
            raise keel.errors.NotFound(f"payment {request.payment_id} does not exist") from None
        return payments_pb2.GetPaymentResponse(payment=to_proto(payment))
