"""The catalog and payments as orders.domain's ports, over their generated clients (found by
discovery, connected on first use): a failed call becomes a DependencyError. A call given a
`metadata` sends it along (a saga step's `idempotency-key`: the peers store their answer per
key; the correlation id)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

import grpc
import grpc.aio
import keel.errors
from acme.catalog.v1 import catalog_keel, catalog_pb2
from acme.payments.v1 import payments_keel, payments_pb2

from orders.domain import CapturedError, DependencyError, Line, Metadata, Payment

_UNCERTAIN = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE})
"""Outcomes after which the peer may have done the work (it can fail before answering)."""


def _failure(peer: str, error: grpc.aio.AioRpcError) -> DependencyError:
    return DependencyError(peer, error, uncertain=error.code() in _UNCERTAIN)


def _reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a FAILED_PRECONDITION ("" for other codes)."""
    if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return ""
    return keel.errors.from_rpc_error(error).reason


def _payment(message: payments_pb2.Payment) -> Payment:
    state = payments_pb2.PaymentState.Name(message.state).removeprefix("PAYMENT_STATE_")
    updated = message.update_time.ToDatetime(UTC) if message.HasField("update_time") else None
    return Payment(
        message.payment_id,
        state,
        message.amount_cents,
        message.currency,
        message.decline_reason,
        updated,
    )


class CatalogPeer:
    """orders.domain.Catalog over CatalogServiceClient."""

    def __init__(self, client: catalog_keel.CatalogServiceClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> catalog_keel.CatalogServiceClient:
        if self._client is None:  # connect lazily: discovery and a running event loop
            self._client = catalog_keel.CatalogServiceClient.connect()
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def reserve(
        self, order_id: str, lines: Sequence[Line], *, metadata: Metadata = ()
    ) -> tuple[int, str]:
        request = catalog_pb2.ReserveStockRequest(
            order_id=order_id,
            lines=[
                catalog_pb2.StockLine(product_id=x.product_id, quantity=x.quantity) for x in lines
            ],
        )
        try:
            reserved = await self.client.reserve_stock(request, metadata=list(metadata))
        except grpc.aio.AioRpcError as error:
            raise _failure("the catalog", error) from None
        return reserved.total_cents, reserved.currency

    async def release(self, order_id: str, *, metadata: Metadata = ()) -> None:
        request = catalog_pb2.ReleaseStockRequest(order_id=order_id)
        try:
            await self.client.release_stock(request, metadata=list(metadata))
        except grpc.aio.AioRpcError as error:
            raise _failure("the catalog", error) from None


class PaymentsPeer:
    """orders.domain.Payments over PaymentServiceClient."""

    def __init__(self, client: payments_keel.PaymentServiceClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> payments_keel.PaymentServiceClient:
        if self._client is None:
            self._client = payments_keel.PaymentServiceClient.connect()
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def authorize(
        self,
        order_id: str,
        amount_cents: int,
        currency: str,
        token: str,
        *,
        metadata: Metadata = (),
    ) -> Payment:
        request = payments_pb2.AuthorizePaymentRequest(
            order_id=order_id,
            amount_cents=amount_cents,
            currency=currency,
            payment_method_token=token,
        )
        try:
            reply = await self.client.authorize_payment(request, metadata=list(metadata))
            return _payment(reply.payment)
        except grpc.aio.AioRpcError as error:
            raise _failure("payments", error) from None

    async def capture(self, payment_id: str, *, metadata: Metadata = ()) -> Payment:
        request = payments_pb2.CapturePaymentRequest(payment_id=payment_id)
        try:
            return _payment(
                (await self.client.capture_payment(request, metadata=list(metadata))).payment
            )
        except grpc.aio.AioRpcError as error:
            raise _failure("payments", error) from None

    async def void(self, order_id: str, *, metadata: Metadata = ()) -> Payment:
        """VoidPayment by the order; CapturedError when its payment was captured (ErrorInfo
        reason PAYMENT_CAPTURED)."""
        request = payments_pb2.VoidPaymentRequest(order_id=order_id)
        try:
            reply = await self.client.void_payment(request, metadata=list(metadata))
        except grpc.aio.AioRpcError as error:
            if _reason(error) == "PAYMENT_CAPTURED":
                raise CapturedError(order_id) from None
            raise _failure("payments", error) from None
        return _payment(reply.payment)

    async def refund(self, order_id: str, *, metadata: Metadata = ()) -> Payment | None:
        """RefundPayment by the order; None when nothing was captured (no payment: NOT_FOUND,
        or one never captured: PAYMENT_NOT_CAPTURED)."""
        request = payments_pb2.RefundPaymentRequest(order_id=order_id)
        try:
            reply = await self.client.refund_payment(request, metadata=list(metadata))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND or (
                _reason(error) == "PAYMENT_NOT_CAPTURED"
            ):
                return None
            raise _failure("payments", error) from None
        return _payment(reply.payment)
