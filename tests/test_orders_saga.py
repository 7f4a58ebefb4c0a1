"""Orders' sagas proven on real processes: catalog, payments and orders as `python -m
<service>` on their own SQLite files. Sagas stopped at every step boundary (forward, while
compensating, and cancelling) by orders' test hook (ORDERS_TEST_PAUSE_AT), orders SIGKILLed
and restarted: every order ends CONFIRMED, REJECTED or CANCELLED, none PENDING, and stock and
payments add up exactly (each effect once). Then catalog, and payments, down for a while
(orders' circuit opens): the orders placed meanwhile end REJECTED with everything given back
once the peer is back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from acme.catalog.v1 import catalog_keel, catalog_pb2
from acme.orders.v1 import orders_keel, orders_pb2
from keel.testing.nats import eventually

from tests.test_shop_events import CALLER, START, Service, _rows

State = orders_pb2.OrderState
FORWARD = [
    f"{when}:{step}"
    for step in ("open", "reserve", "authorize", "capture", "confirm")
    for when in ("before", "after")
]
UNDOING = [  # a declined card: undone last first
    f"{when}:undo:{step}"
    for step in ("authorize", "reserve", "open")
    for when in ("before", "after")
]
CANCELLING = [
    f"{when}:{step}"
    for step in ("cancel", "refund", "release", "void")
    for when in ("before", "after")
]
SAGA = {
    "KEEL_SAGA_LEASE": "1",  # a killed process's sagas are resumed 1 s after its last record
    "KEEL_SAGA_BACKOFF": "0.1,0.3",
    "KEEL_BREAKER_RESET": "0.5",
}


@contextmanager
def shop(folder: Path, **orders_env: str) -> Iterator[tuple[Service, Service, Service]]:
    """catalog, payments and orders (short saga lease and backoff), all started."""
    catalog = Service("catalog", folder)
    payments = Service("payments", folder)
    orders = Service(
        "orders",
        folder,
        KEEL_TARGET_ACME_CATALOG_V1_CATALOGSERVICE=catalog.address,
        KEEL_TARGET_ACME_PAYMENTS_V1_PAYMENTSERVICE=payments.address,
        **SAGA,
        **orders_env,
    )
    started = []
    try:
        for service in (catalog, payments, orders):
            service.start()
            started.append(service)
        yield catalog, payments, orders
    finally:
        for service in reversed(started):
            service.stop()


def _order(customer: str, token: str = "tok_visa", product: str = "p_mug") -> Any:
    return orders_pb2.CreateOrderRequest(
        customer_id=customer,
        lines=[orders_pb2.OrderLine(product_id=product, quantity=2)],
        payment_method_token=token,
    )


async def _orders_of(address: str, customers: list[str]) -> list[orders_pb2.Order]:
    found: list[orders_pb2.Order] = []
    async with orders_keel.OrderServiceClient.connect(address, settings=CALLER) as client:
        for customer in customers:
            page = await client.list_orders(
                orders_pb2.ListOrdersRequest(customer_id=customer, page_size=100)
            )
            found += page.orders
    return found


async def _settled(orders: Service, customers: list[str]) -> list[orders_pb2.Order]:
    """The customers' orders once none is PENDING and every saga has ended."""
    final: list[orders_pb2.Order] = []

    async def done() -> bool:
        nonlocal final
        try:
            final = await _orders_of(orders.address, customers)
        except grpc.aio.AioRpcError as error:  # just restarted: the channel reconnects
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            return False
        unfinished = _rows(
            orders.database,
            "SELECT count(*) FROM keel_saga WHERE status IN ('RUNNING', 'FORWARD', 'COMPENSATING')",
        )[0][0]
        return unfinished == 0 and all(o.state != State.ORDER_STATE_PENDING for o in final)

    await eventually(done, timeout=60, what="every order final, every saga ended")
    return final


async def _accounts(catalog: Service, payments: Service, placed: list[orders_pb2.Order]) -> None:
    """Stock, reservations and payments add up exactly against the final orders."""
    confirmed = [o for o in placed if o.state == State.ORDER_STATE_CONFIRMED]
    reserved = {row[0] for row in _rows(catalog.database, "SELECT order_id FROM reservations")}
    assert reserved == {o.order_id for o in confirmed}  # nothing held for any other order
    sold = dict.fromkeys(START, 0)
    for order in confirmed:
        for line in order.lines:
            sold[line.product_id] += line.quantity
    async with catalog_keel.CatalogServiceClient.connect(catalog.address) as client:
        for product_id, start in START.items():
            reply = await client.get_product(catalog_pb2.GetProductRequest(product_id=product_id))
            assert reply.product.stock == start - sold[product_id], (product_id, sold)
    paid = {
        order_id: (state, amount)
        for order_id, state, amount in _rows(
            payments.database, "SELECT order_id, state, amount_cents FROM payments"
        )
    }
    for order in placed:
        state, amount = paid.get(order.order_id, ("", 0))
        if order.state == State.ORDER_STATE_CONFIRMED:
            assert (state, amount) == ("CAPTURED", order.total_cents), order
        elif order.state == State.ORDER_STATE_CANCELLED:  # it was captured: given back
            assert (state, amount) == ("REFUNDED", order.total_cents), order
        else:  # never paid, declined or voided
            assert state in ("", "DECLINED", "VOIDED"), (order, state)
    captured = sum(a for s, a in paid.values() if s == "CAPTURED")
    assert captured == sum(o.total_cents for o in confirmed)


async def _paused(orders: Service, count: int) -> None:
    async def all_there() -> bool:
        return orders.log.read_text().count('"event":"saga paused for a test"') >= count

    await eventually(all_there, timeout=60, what=f"{count} sagas paused")


async def _call(call: Any) -> None:
    with contextlib.suppress(grpc.aio.AioRpcError):  # orders was killed under it
        await call


async def test_orders_killed_at_every_saga_boundary_finish_after_a_restart(
    tmp_path: Path,
) -> None:
    plans = {f"fwd-{i}": at for i, at in enumerate(FORWARD)}
    plans |= {f"undo-{i}": at for i, at in enumerate(UNDOING)}
    plans |= {f"cancel-{i}": at for i, at in enumerate(CANCELLING)}
    hook = ",".join(f"{customer}={at}" for customer, at in plans.items())
    customers = list(plans)
    with shop(tmp_path, ORDERS_TEST_PAUSE_AT=hook) as (catalog, payments, orders):
        async with orders_keel.OrderServiceClient.connect(
            orders.address, settings=CALLER
        ) as client:
            to_cancel = [
                (await client.create_order(_order(c), timeout=10)).order
                for c in customers
                if c.startswith("cancel")
            ]
            assert {o.state for o in to_cancel} == {State.ORDER_STATE_CONFIRMED}
            calls: list[Any] = [
                client.cancel_order(orders_pb2.CancelOrderRequest(order_id=o.order_id), timeout=60)
                for o in to_cancel
            ]
            calls += [
                client.create_order(
                    _order(c, "tok_decline" if c.startswith("undo") else "tok_visa"), timeout=60
                )
                for c in customers
                if not c.startswith("cancel")
            ]
            pending = [asyncio.ensure_future(_call(call)) for call in calls]
            await _paused(orders, len(plans))
            orders.kill()
            await asyncio.gather(*pending)
        orders.env.pop("ORDERS_TEST_PAUSE_AT")
        orders.start()  # resumes them all
        placed = await _settled(orders, customers)

        states = {o.customer_id: o.state for o in placed}
        assert len(placed) == len(plans)  # one order each: nothing placed twice
        expected = {
            customer: State.ORDER_STATE_CONFIRMED
            if customer.startswith("fwd")
            else State.ORDER_STATE_REJECTED
            if customer.startswith("undo")
            else State.ORDER_STATE_CANCELLED
            for customer in plans
        }
        assert states == expected
        reasons = {o.customer_id: o.reason for o in placed}  # the Order message says why
        for customer in plans:
            if customer.startswith("undo"):
                assert reasons[customer] == "authorize: DeclinedError: card declined"
            elif customer.startswith("cancel"):
                assert reasons[customer] == "cancelled by the customer"
        await _accounts(catalog, payments, placed)
        sagas = _rows(orders.database, "SELECT status, count(*) FROM keel_saga GROUP BY status")
        assert dict(sagas) == {
            "COMPLETED": len(FORWARD) + 2 * len(CANCELLING),  # placed; cancelled
            "COMPENSATED": len(UNDOING),
        }


async def test_orders_placed_while_a_peer_is_down_are_rejected_once_it_is_back(
    tmp_path: Path,
) -> None:
    with shop(tmp_path) as (catalog, payments, orders):
        async with orders_keel.OrderServiceClient.connect(
            orders.address, settings=CALLER
        ) as client:
            customers = []
            for peer, name in ((payments, "payments-down"), (catalog, "catalog-down")):
                peer.kill()
                batch = [f"{name}-{i}" for i in range(2)]
                customers += batch
                for customer in batch:  # each fails: the peer is down (its circuit opens)
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await client.create_order(_order(customer, product="p_teapot"), timeout=30)
                    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                held = await _orders_of(orders.address, batch)
                assert {o.state for o in held} <= {
                    State.ORDER_STATE_PENDING,  # undoing waits for the peer
                    State.ORDER_STATE_REJECTED,  # nothing to undo at the peer that is down
                }
                peer.start()  # back: the sagas finish undoing
                await _settled(orders, batch)
            after = (
                await client.create_order(_order("after", product="p_teapot"), timeout=30)
            ).order
            assert after.state == State.ORDER_STATE_CONFIRMED
        placed = await _settled(orders, [*customers, "after"])
        assert "circuit open" in orders.log.read_text()  # its breaker opened meanwhile
        reasons = dict(_rows(orders.database, "SELECT customer_id, reason FROM orders"))
        for customer in customers:  # why each turned back, not why undoing it failed
            down = "authorize" if customer.startswith("payments") else "reserve"
            assert reasons[customer].startswith(f"{down}: Unavailable"), reasons
        assert {o.customer_id: o.state for o in placed} == {
            **dict.fromkeys(customers, State.ORDER_STATE_REJECTED),
            "after": State.ORDER_STATE_CONFIRMED,
        }
        await _accounts(catalog, payments, placed)
