"""acme.orders.v1.OrderService over the order flow (orders.domain): proto in, proto out.

The service calls the catalog and payments only through their generated clients, found by
discovery, with the deadlines, retries and circuit breaking those clients carry.

Ownership: a call made for a verified user (`keel.Context.subject` with `verified`, from the
token the gateway forwarded) acts only on that user's orders. Someone else's order is
NOT_FOUND, as a missing one is (GetOrder, WatchOrder, CancelOrder: its existence is not
revealed); creating or listing orders for another customer id is PERMISSION_DENIED (ErrorInfo
reason NOT_YOUR_ORDERS). A call without a verified user (another service's own work, an
operator's tool inside the network, or any call when no keys are configured) is not restricted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import grpc
import grpc.aio
import keel
import keel.idempotency
import keel.saga
from acme.catalog.v1 import catalog_keel
from acme.orders.v1 import orders_keel, orders_pb2
from acme.payments.v1 import payments_keel, payments_pb2
from google.protobuf import timestamp_pb2
from keel.data import PageTokenError, decode_page_token, encode_page_token
from keel.runtime import config

from orders.domain import (
    ConflictError,
    DependencyError,
    InvalidOrderError,
    Line,
    NotConfirmedError,
    NotFoundError,
    Order,
    Orders,
    ShippedError,
    State,
    Store,
)
from orders.peers import CatalogPeer, PaymentsPeer
from orders.settings import OrdersSettings
from orders.store import MemoryStore

DEFAULT_CANCEL_REASON = "cancelled by the customer"
STATES = {
    State.PENDING: orders_pb2.ORDER_STATE_PENDING,
    State.CONFIRMED: orders_pb2.ORDER_STATE_CONFIRMED,
    State.SHIPPED: orders_pb2.ORDER_STATE_SHIPPED,
    State.CANCELLED: orders_pb2.ORDER_STATE_CANCELLED,
    State.REJECTED: orders_pb2.ORDER_STATE_REJECTED,
}


def _stamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def to_proto(order: Order) -> orders_pb2.Order:
    message = orders_pb2.Order(
        order_id=order.order_id,
        customer_id=order.customer_id,
        lines=[
            orders_pb2.OrderLine(product_id=x.product_id, quantity=x.quantity) for x in order.lines
        ],
        state=STATES[order.state],
        total_cents=order.total_cents,
        currency=order.currency,
        create_time=_stamp(order.created),
        update_time=_stamp(order.updated),
        reason=order.reason,
    )
    if order.payment is not None:
        payment = order.payment
        message.payment.CopyFrom(
            payments_pb2.Payment(
                payment_id=payment.payment_id,
                order_id=order.order_id,
                amount_cents=payment.amount_cents,
                currency=payment.currency,
                state=payments_pb2.PaymentState.Value(f"PAYMENT_STATE_{payment.state}"),
                decline_reason=payment.decline_reason,
            )
        )
        if payment.updated is not None:
            message.payment.update_time.CopyFrom(_stamp(payment.updated))
    return message


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


def _failed(error: DependencyError) -> keel.errors.KeelError:
    assert isinstance(error.cause, grpc.aio.AioRpcError)
    return _dependency_error(error.peer, error.cause)


def _owner(context: keel.Context) -> str | None:
    """The verified user the call is made for (None without one)."""
    return context.subject if context.verified else None


def _for_customer(context: keel.Context, customer_id: str) -> None:
    """Refuse a call made for one user that names another customer (PERMISSION_DENIED)."""
    owner = _owner(context)
    if owner and customer_id != owner:
        raise keel.errors.PermissionDenied(
            f"{owner} may act only on their own orders, not customer {customer_id}'s",
            reason="NOT_YOUR_ORDERS",
            domain="acme.orders",
            metadata={"subject": owner, "customer_id": customer_id},
        )


def _after(token: str) -> str:
    """The last order id of the previous page (keyset pagination: stable under inserts)."""
    try:
        key = decode_page_token(token)
    except PageTokenError:
        key = None
    if key == ():
        return ""
    if key is None or len(key) != 1 or not isinstance(key[0], str):
        raise keel.errors.InvalidArgument(
            "the page token is not one this service issued",
            field_violations={"page_token": "use the next page token of a previous response"},
        )
    return key[0]


class OrderService(orders_keel.OrderServiceBase):
    """Orders over gRPC, on `store` (default: a throwaway database, for tests), within
    `orders_settings` (default: from the ORDERS_* environment). `watch_interval` (default: the
    settings'): seconds between WatchOrder's reads of an order another worker may change."""

    def __init__(
        self,
        store: Store | None = None,
        catalog: catalog_keel.CatalogServiceClient | None = None,
        payments: payments_keel.PaymentServiceClient | None = None,
        *,
        watch_interval: float | None = None,
        settings: config.Settings | None = None,
        orders_settings: OrdersSettings | None = None,
    ) -> None:
        self.store = store if store is not None else MemoryStore()
        self._catalog = CatalogPeer(catalog)
        self._payments = PaymentsPeer(payments)
        self.orders = Orders(
            self.store,
            self._catalog,
            self._payments,
            watch_interval=watch_interval,
            settings=settings,
            orders_settings=orders_settings,
        )

    @property
    def recovery(self) -> keel.saga.Recovery:
        """Resumes the placing and cancelling sagas a stopped process left, at start-up:
        `keel.serve([service], background=[service.recovery])`."""
        return self.orders.placing.recovery()

    async def __keel_close__(self) -> None:
        """Stop the sagas in flight (resumed at the next start), close the clients this
        service opened and the store (when its server stops)."""
        await self.orders.placing.close()
        await self._catalog.close()
        await self._payments.close()
        close = getattr(self.store, "close", None)
        if close is not None:
            await close()

    async def _get(self, order_id: str, customer_id: str = "", owner: str | None = None) -> Order:
        """The order, NOT_FOUND if it does not exist, is not `customer_id`'s (when given) or
        not `owner`'s (the call's verified user, when there is one)."""
        try:
            order = await self.orders.get(order_id, customer_id)
        except NotFoundError:
            order = None
        if order is None or (owner and order.customer_id != owner):
            raise keel.errors.NotFound(f"order {order_id} does not exist")
        return order

    async def create_order(
        self, request: orders_pb2.CreateOrderRequest, context: keel.Context
    ) -> orders_pb2.CreateOrderResponse:
        _for_customer(context, request.customer_id)
        try:
            order = await self.orders.create(
                request.customer_id,
                [Line(x.product_id, x.quantity) for x in request.lines],
                request.payment_method_token,
                # The caller's key, else the call's idempotency key (the gateway's
                # Idempotency-Key header, or metadata the caller set): one order per key.
                request.request_id or keel.idempotency.key_of(context.metadata) or "",
            )
        except InvalidOrderError as error:
            raise keel.errors.InvalidArgument(
                str(error), field_violations={error.field: str(error)}
            ) from None
        except DependencyError as error:
            raise _failed(error) from None
        except ConflictError:
            raise keel.errors.Aborted(
                f"request {request.request_id} is being placed by another call: try again"
            ) from None
        return orders_pb2.CreateOrderResponse(order=to_proto(order))

    async def get_order(
        self, request: orders_pb2.GetOrderRequest, context: keel.Context
    ) -> orders_pb2.GetOrderResponse:
        order = await self._get(request.order_id, request.customer_id, _owner(context))
        return orders_pb2.GetOrderResponse(order=to_proto(order))

    async def list_orders(
        self, request: orders_pb2.ListOrdersRequest, context: keel.Context
    ) -> orders_pb2.ListOrdersResponse:
        _for_customer(context, request.customer_id)
        orders, last = await self.orders.page(
            request.customer_id,
            _after(request.page_token),
            self.orders.page_size(request.page_size),
        )
        return orders_pb2.ListOrdersResponse(
            orders=[to_proto(o) for o in orders],
            next_page_token="" if last is None else encode_page_token([last]),
        )

    async def cancel_order(
        self, request: orders_pb2.CancelOrderRequest, context: keel.Context
    ) -> orders_pb2.CancelOrderResponse:
        owner = _owner(context)
        if owner:  # someone else's order is NOT_FOUND, before anything changes
            await self._get(request.order_id, owner=owner)
        try:
            order = await self.orders.cancel(
                request.order_id, request.reason or DEFAULT_CANCEL_REASON
            )
        except NotFoundError:
            raise keel.errors.NotFound(f"order {request.order_id} does not exist") from None
        except ShippedError:
            raise keel.errors.FailedPrecondition(
                f"order {request.order_id} has shipped", reason="ORDER_SHIPPED"
            ) from None
        except DependencyError as error:
            raise _failed(error) from None
        return orders_pb2.CancelOrderResponse(order=to_proto(order))

    async def watch_order(
        self, request: orders_pb2.WatchOrderRequest, context: keel.Context
    ) -> AsyncIterator[orders_pb2.WatchOrderResponse]:
        await self._get(request.order_id, owner=_owner(context))  # before the stream starts
        async for order in self.orders.watch(request.order_id):
            yield orders_pb2.WatchOrderResponse(order=to_proto(order))

    async def mark_shipped(
        self, request: orders_pb2.MarkShippedRequest, context: keel.Context
    ) -> orders_pb2.MarkShippedResponse:
        try:
            order = await self.orders.ship(request.order_id)
        except NotFoundError:
            raise keel.errors.NotFound(f"order {request.order_id} does not exist") from None
        except NotConfirmedError as error:
            raise keel.errors.FailedPrecondition(
                f"order {request.order_id} is "
                f"{orders_pb2.OrderState.Name(STATES[error.order.state])}, not confirmed",
                reason="ORDER_NOT_CONFIRMED",
            ) from None
        return orders_pb2.MarkShippedResponse(order=to_proto(order))
