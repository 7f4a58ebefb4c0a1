"""acme.payments.v1.PaymentService over the payments domain: proto in, proto out.

A simulated card processor (payments.settings says what it accepts). Every mutation takes an
`idempotency-key` (keel.idempotency): a call carrying one (an order saga's step) has its effect
once, stored with the key in the same transaction; a repeat gets the first answer back.

VoidPayment releases an authorization; a CAPTURED payment is FAILED_PRECONDITION (reason
PAYMENT_CAPTURED) naming RefundPayment, which gives a captured payment back (REFUNDED). Both
name the payment or the order (`order_id`: a compensation that may not know the payment id).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import keel
import keel.idempotency
from acme.payments.v1 import payments_keel, payments_pb2
from google.protobuf import timestamp_pb2

from payments.domain import (
    BadStateError,
    CapturedError,
    ConflictError,
    NetworkUnavailableError,
    NotCapturedError,
    NotFoundError,
    Payment,
    Payments,
    State,
)
from payments.settings import PaymentsSettings
from payments.store import MemoryStore, SqlStore

DOMAIN = "acme.payments"
STATES = {
    State.AUTHORIZED: payments_pb2.PAYMENT_STATE_AUTHORIZED,
    State.CAPTURED: payments_pb2.PAYMENT_STATE_CAPTURED,
    State.VOIDED: payments_pb2.PAYMENT_STATE_VOIDED,
    State.DECLINED: payments_pb2.PAYMENT_STATE_DECLINED,
    State.REFUNDED: payments_pb2.PAYMENT_STATE_REFUNDED,
}

Named = (
    payments_pb2.CapturePaymentRequest
    | payments_pb2.VoidPaymentRequest
    | payments_pb2.RefundPaymentRequest
)
Change = Callable[[Payments, str], Awaitable[Payment]]


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


def _bad_state(error: BadStateError) -> keel.errors.KeelError:
    """FAILED_PRECONDITION with an ErrorInfo: the state, and the rpc to use instead if any."""
    state = payments_pb2.PaymentState.Name(STATES[error.payment.state])
    metadata = {"payment_id": error.payment.payment_id, "state": state}
    reason = "BAD_PAYMENT_STATE"
    if isinstance(error, CapturedError):
        reason, metadata["use"] = "PAYMENT_CAPTURED", "RefundPayment"
    elif isinstance(error, NotCapturedError):
        reason = "PAYMENT_NOT_CAPTURED"
        if error.payment.state == State.AUTHORIZED:
            metadata["use"] = "VoidPayment"
    return keel.errors.FailedPrecondition(
        str(error), reason=reason, domain=DOMAIN, metadata=metadata
    )


class PaymentService(payments_keel.PaymentServiceBase):
    """Payments over gRPC, on `store` (default: a throwaway database, for tests), with
    `settings` (default: from the PAYMENTS_* environment)."""

    def __init__(
        self, store: SqlStore | None = None, settings: PaymentsSettings | None = None
    ) -> None:
        self.store = store if store is not None else MemoryStore()
        self.settings = settings or PaymentsSettings()
        self.payments = Payments(self.store, self.settings)

    async def __keel_close__(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            await close()

    async def _change(
        self, request: Named, context: keel.Context, by_payment: Change, by_order: Change
    ) -> payments_pb2.Payment:
        """Apply a change to the payment the request names (by id, or by its order), keyed."""
        order_id = getattr(request, "order_id", "")
        name = f"order {order_id}'s payment" if order_id else f"payment {request.payment_id}"
        try:
            async with keel.idempotency.call(
                self.store.db, context, request, payments_pb2.Payment
            ) as call:
                if call.replay is not None:
                    return call.replay
                payments = Payments(self.store.joined(call.session), self.settings)
                if order_id:
                    payment = await by_order(payments, order_id)
                else:
                    payment = await by_payment(payments, request.payment_id)
                return call.respond(to_proto(payment))
        except NotFoundError:
            raise keel.errors.NotFound(f"{name} does not exist") from None
        except BadStateError as error:
            raise _bad_state(error) from None
        except ConflictError:
            raise keel.errors.Aborted(f"{name} changed meanwhile: try again") from None

    async def authorize_payment(
        self, request: payments_pb2.AuthorizePaymentRequest, context: keel.Context
    ) -> payments_pb2.AuthorizePaymentResponse:
        try:
            async with keel.idempotency.call(
                self.store.db, context, request, payments_pb2.AuthorizePaymentResponse
            ) as call:
                if call.replay is not None:
                    return call.replay
                payments = Payments(self.store.joined(call.session), self.settings)
                payment = await payments.authorize(
                    request.order_id,
                    request.amount_cents,
                    request.currency,
                    request.payment_method_token,
                )
                return call.respond(
                    payments_pb2.AuthorizePaymentResponse(payment=to_proto(payment))
                )
        except NetworkUnavailableError as error:
            raise keel.errors.Unavailable(
                str(error), retry_after=self.settings.retry_after
            ) from None
        except ConflictError:
            raise keel.errors.Aborted(
                f"order {request.order_id} is being authorized by another call: try again"
            ) from None

    async def capture_payment(
        self, request: payments_pb2.CapturePaymentRequest, context: keel.Context
    ) -> payments_pb2.CapturePaymentResponse:
        payment = await self._change(request, context, Payments.capture, Payments.capture)
        return payments_pb2.CapturePaymentResponse(payment=payment)

    async def void_payment(
        self, request: payments_pb2.VoidPaymentRequest, context: keel.Context
    ) -> payments_pb2.VoidPaymentResponse:
        payment = await self._change(request, context, Payments.void, Payments.void_order)
        return payments_pb2.VoidPaymentResponse(payment=payment)

    async def refund_payment(
        self, request: payments_pb2.RefundPaymentRequest, context: keel.Context
    ) -> payments_pb2.RefundPaymentResponse:
        payment = await self._change(request, context, Payments.refund, Payments.refund_order)
        return payments_pb2.RefundPaymentResponse(payment=payment)

    async def get_payment(
        self, request: payments_pb2.GetPaymentRequest, context: keel.Context
    ) -> payments_pb2.GetPaymentResponse:
        try:
            payment = await self.payments.get(request.payment_id)
        except NotFoundError:
            raise keel.errors.NotFound(f"payment {request.payment_id} does not exist") from None
        return payments_pb2.GetPaymentResponse(payment=to_proto(payment))
