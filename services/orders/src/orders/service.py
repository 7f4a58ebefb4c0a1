"""acme.orders.v1.OrderService: orders that reserve stock and take payment.

The service calls the catalog and payments only through their generated clients, found by
discovery, with the deadlines, retries and circuit breaking those clients carry.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import keel
from acme.catalog.v1 import catalog_keel, catalog_pb2
from acme.orders.v1 import orders_keel, orders_pb2
from acme.payments.v1 import payments_keel, payments_pb2
from google.protobuf import timestamp_pb2

from orders.store import MemoryStore

State = orders_pb2.OrderState
FINAL = {State.ORDER_STATE_SHIPPED, State.ORDER_STATE_CANCELLED, State.ORDER_STATE_REJECTED}
DEFAULT_PAGE_SIZE = 50


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _dependency_error(peer: str, error: grpc.aio.AioRpcError) -> keel.errors.KeelError:
    """What our caller sees when a call to `peer` failed (the peer's details travel on)."""
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return keel.errors.Unavailable(f"{peer} is unavailable, try again", retry_after=1.0)
    caught = keel.errors.from_rpc_error(error)
    if code == grpc.StatusCode.NOT_FOUND:  # something the order names does not exist
        named = "; ".join(f"{v.field}: {v.description}" for v in caught.field_violations)
        return keel.errors.InvalidArgument(
            named or caught.message or f"{peer}: not found",
            field_violations=caught.field_violations,
            reason=caught.reason,
            domain=caught.domain,
            metadata=caught.metadata,
        )
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return caught
    return keel.errors.Internal(f"{peer} failed: {code.name}")


class OrderService(orders_keel.OrderServiceBase):
    """Orders, kept in memory."""

    def __init__(
        self,
        store: MemoryStore | None = None,
        catalog: catalog_keel.CatalogServiceClient | None = None,
        payments: payments_keel.PaymentServiceClient | None = None,
    ) -> None:
        self.store = store or MemoryStore()
        self._catalog = catalog
        self._payments = payments
        self._ids = itertools.count(1)

    @property
    def catalog(self) -> catalog_keel.CatalogServiceClient:
        if self._catalog is None:  # connect lazily: discovery and a running event loop
            self._catalog = catalog_keel.CatalogServiceClient.connect()
        return self._catalog

    @property
    def payments(self) -> payments_keel.PaymentServiceClient:
        if self._payments is None:
            self._payments = payments_keel.PaymentServiceClient.connect()
        return self._payments

    async def __keel_close__(self) -> None:
        """Close the clients this service opened (called when its server stops)."""
        for client in (self._catalog, self._payments):
            if client is not None:
                await client.close()
        self._catalog = self._payments = None

    def _get(self, order_id: str, customer_id: str = "") -> orders_pb2.Order:
        order = self.store.get(order_id)
        if order is None or (customer_id and order.customer_id != customer_id):
            raise keel.errors.NotFound(f"order {order_id} does not exist")
        return order

    async def _save(self, order: orders_pb2.Order, state: int, request_id: str = "") -> None:
        order.state = state  # type: ignore[assignment]
        order.update_time.CopyFrom(_now())
        await self.store.put(order, request_id)

    async def _release(self, order_id: str) -> None:
        # ReleaseStock is idempotent: if this fails, a later cancel releases the stock.
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self.catalog.release_stock(catalog_pb2.ReleaseStockRequest(order_id=order_id))

    async def create_order(
        self, request: orders_pb2.CreateOrderRequest, context: keel.Context
    ) -> orders_pb2.CreateOrderResponse:
        if request.request_id:
            earlier = self.store.by_request(request.customer_id, request.request_id)
            if earlier is not None:
                return orders_pb2.CreateOrderResponse(order=earlier)
        order = orders_pb2.Order(
            order_id=f"o_{next(self._ids)}",
            customer_id=request.customer_id,
            lines=request.lines,
            create_time=_now(),
        )
        await self._save(order, State.ORDER_STATE_PENDING, request.request_id)
        try:
            reserved = await self.catalog.reserve_stock(
                catalog_pb2.ReserveStockRequest(
                    order_id=order.order_id,
                    lines=[
                        catalog_pb2.StockLine(product_id=line.product_id, quantity=line.quantity)
                        for line in request.lines
                    ],
                )
            )
        except grpc.aio.AioRpcError as error:
            await self._save(order, State.ORDER_STATE_REJECTED)
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                await self._release(order.order_id)
            raise _dependency_error("the catalog", error) from None
        order.total_cents = reserved.total_cents
        order.currency = reserved.currency
        try:
            authorized = await self.payments.authorize_payment(
                payments_pb2.AuthorizePaymentRequest(
                    order_id=order.order_id,
                    amount_cents=reserved.total_cents,
                    currency=reserved.currency,
                    payment_method_token=request.payment_method_token,
                )
            )
            payment = authorized.payment
            if payment.state == payments_pb2.PAYMENT_STATE_AUTHORIZED:
                captured = await self.payments.capture_payment(
                    payments_pb2.CapturePaymentRequest(payment_id=payment.payment_id)
                )
                payment = captured.payment
        except grpc.aio.AioRpcError as error:
            await self._release(order.order_id)
            await self._save(order, State.ORDER_STATE_REJECTED)
            raise _dependency_error("payments", error) from None
        order.payment.CopyFrom(payment)
        if payment.state != payments_pb2.PAYMENT_STATE_CAPTURED:
            await self._release(order.order_id)
            await self._save(order, State.ORDER_STATE_REJECTED)
        else:
            await self._save(order, State.ORDER_STATE_CONFIRMED)
        return orders_pb2.CreateOrderResponse(order=order)

    async def get_order(
        self, request: orders_pb2.GetOrderRequest, context: keel.Context
    ) -> orders_pb2.GetOrderResponse:
        return orders_pb2.GetOrderResponse(order=self._get(request.order_id, request.customer_id))

    async def list_orders(
        self, request: orders_pb2.ListOrdersRequest, context: keel.Context
    ) -> orders_pb2.ListOrdersResponse:
        orders = self.store.of_customer(request.customer_id)
        offset = 0
        if request.page_token:
            if not (request.page_token.isascii() and request.page_token.isdigit()):
                raise keel.errors.InvalidArgument(
                    "page_token is not one this service issued",
                    field_violations={"page_token": "use next_page_token from a response"},
                )
            offset = int(request.page_token)
        size = request.page_size or DEFAULT_PAGE_SIZE
        following = offset + size
        return orders_pb2.ListOrdersResponse(
            orders=orders[offset:following],
            next_page_token=str(following) if following < len(orders) else "",
        )

    async def cancel_order(
        self, request: orders_pb2.CancelOrderRequest, context: keel.Context
    ) -> orders_pb2.CancelOrderResponse:
        order = self._get(request.order_id)
        if order.state in (State.ORDER_STATE_CANCELLED, State.ORDER_STATE_REJECTED):
            return orders_pb2.CancelOrderResponse(order=order)
        if order.state == State.ORDER_STATE_SHIPPED:
            raise keel.errors.FailedPrecondition(
                f"order {order.order_id} has shipped", reason="ORDER_SHIPPED"
            )
        try:
            if order.payment.payment_id:
                voided = await self.payments.void_payment(
                    payments_pb2.VoidPaymentRequest(payment_id=order.payment.payment_id)
                )
                order.payment.CopyFrom(voided.payment)
            await self.catalog.release_stock(
                catalog_pb2.ReleaseStockRequest(order_id=order.order_id)
            )
        except grpc.aio.AioRpcError as error:
            raise _dependency_error("a dependency", error) from None
        await self._save(order, State.ORDER_STATE_CANCELLED)
        return orders_pb2.CancelOrderResponse(order=order)

    async def watch_order(
        self, request: orders_pb2.WatchOrderRequest, context: keel.Context
    ) -> AsyncIterator[orders_pb2.WatchOrderResponse]:
        order = self._get(request.order_id)
        yield orders_pb2.WatchOrderResponse(order=order)
        while order.state not in FINAL:
            seen = order.update_time.ToNanoseconds()

            def changed(seen: int = seen) -> bool:
                return self._get(request.order_id).update_time.ToNanoseconds() != seen

            async with self.store.changed:
                await self.store.changed.wait_for(changed)
            order = self._get(request.order_id)
            yield orders_pb2.WatchOrderResponse(order=order)

    async def mark_shipped(
        self, request: orders_pb2.MarkShippedRequest, context: keel.Context
    ) -> orders_pb2.MarkShippedResponse:
        order = self._get(request.order_id)
        if order.state == State.ORDER_STATE_CONFIRMED:
            await self._save(order, State.ORDER_STATE_SHIPPED)
        elif order.state != State.ORDER_STATE_SHIPPED:
            raise keel.errors.FailedPrecondition(
                f"order {order.order_id} is {State.Name(order.state)}, not confirmed",
                reason="ORDER_NOT_CONFIRMED",
            )
        return orders_pb2.MarkShippedResponse(order=order)
