"""Orders' data in its own database (keel.data), events through its outbox (keel.events):
implements orders.domain.Store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from acme.orders.v1 import orders_keel, orders_pb2
from google.protobuf import timestamp_pb2
from keel.data import Database, conflicts
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from orders.domain import ConflictError, Line, Order, Payment, State
from orders.model import payment_json
from orders.tables import Base, OrderLineRow, OrderRequestRow, OrderRow


def _utc(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes: they were written in UTC."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _payment_json(payment: Payment | None) -> dict[str, Any] | None:
    if payment is None:
        return None
    updated = None if payment.updated is None else _utc(payment.updated).isoformat()
    return {**payment_json(payment), "updated": updated}


def _payment(data: dict[str, Any] | None) -> Payment | None:
    if data is None:
        return None
    updated = data.get("updated")
    return Payment(
        data["payment_id"],
        data["state"],
        data["amount_cents"],
        data["currency"],
        data["decline_reason"],
        None if updated is None else datetime.fromisoformat(updated),
    )


def _stamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _lines(order: Order) -> list[orders_pb2.OrderLine]:
    return [orders_pb2.OrderLine(product_id=x.product_id, quantity=x.quantity) for x in order.lines]


class SqlTransaction:
    """orders.domain.Transaction on one AsyncSession."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _order(self, row: OrderRow | None) -> Order | None:
        if row is None:
            return None
        lines = await self.session.scalars(
            select(OrderLineRow)
            .where(OrderLineRow.order_id == row.order_id)
            .order_by(OrderLineRow.line)
        )
        return Order(
            row.order_id,
            row.customer_id,
            tuple(Line(line.product_id, line.quantity) for line in lines),
            State(row.state),
            row.total_cents,
            row.currency,
            _payment(row.payment),
            _utc(row.created),
            _utc(row.updated),
            row.version,
            row.reason,
        )

    async def get(self, order_id: str) -> Order | None:
        return await self._order(await self.session.get(OrderRow, order_id))

    async def lock(self, order_id: str) -> Order | None:
        row = await self.session.scalar(
            select(OrderRow).where(OrderRow.order_id == order_id).with_for_update()
        )
        return await self._order(row)

    async def by_request(self, customer_id: str, request_id: str) -> Order | None:
        found = await self.session.get(OrderRequestRow, (customer_id, request_id))
        return None if found is None else await self.get(found.order_id)

    async def add(self, order: Order, request_id: str = "") -> None:
        self.session.add(
            OrderRow(
                order_id=order.order_id,
                customer_id=order.customer_id,
                state=order.state.value,
                total_cents=order.total_cents,
                currency=order.currency,
                payment=_payment_json(order.payment),
                created=_utc(order.created),
                updated=_utc(order.updated),
                version=order.version,
                reason=order.reason,
            )
        )
        await self.session.flush()
        self.session.add_all(
            OrderLineRow(
                order_id=order.order_id, line=i, product_id=x.product_id, quantity=x.quantity
            )
            for i, x in enumerate(order.lines)
        )
        if request_id:
            self.session.add(
                OrderRequestRow(
                    customer_id=order.customer_id, request_id=request_id, order_id=order.order_id
                )
            )
        await self.session.flush()

    async def put(self, order: Order) -> None:
        row = await self.session.get(OrderRow, order.order_id)
        if row is None:
            raise ConflictError(f"order {order.order_id} no longer exists")
        row.state = order.state.value
        row.total_cents = order.total_cents
        row.currency = order.currency
        row.payment = _payment_json(order.payment)
        row.updated = _utc(order.updated)
        row.version = order.version
        row.reason = order.reason

    async def page(self, customer_id: str, after: str, limit: int) -> list[Order]:
        rows = await self.session.scalars(
            select(OrderRow)
            .where(OrderRow.customer_id == customer_id, OrderRow.order_id > after)
            .order_by(OrderRow.order_id)
            .limit(limit)
        )
        return [order for row in rows.all() if (order := await self._order(row)) is not None]

    async def placed(self, order: Order) -> None:
        await orders_keel.OrderServicePublisher(self.session).order_placed(
            orders_pb2.OrderPlaced(
                order_id=order.order_id,
                customer_id=order.customer_id,
                lines=_lines(order),
                total_cents=order.total_cents,
                currency=order.currency,
                place_time=_stamp(order.updated),
            )
        )

    async def cancelled(self, order: Order, reason: str) -> None:
        await orders_keel.OrderServicePublisher(self.session).order_cancelled(
            orders_pb2.OrderCancelled(
                order_id=order.order_id,
                lines=_lines(order),
                reason=reason,
                cancel_time=_stamp(order.updated),
            )
        )


class SqlStore:
    """Orders' Store on a keel.data.Database (migrated with services/orders/migrations)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[SqlTransaction]:
        """One transaction (orders.domain.Store)."""
        with conflicts(ConflictError):
            async with self.db.transaction(readonly=readonly) as session:
                yield SqlTransaction(session)

    async def close(self) -> None:
        """Close the database's connections (the server calls it when it stops)."""
        await self.db.dispose()


class MemoryStore(SqlStore):
    """The same store on a private throwaway SQLite database (its tables made from the models),
    removed when closed: for tests and examples."""

    def __init__(self) -> None:
        super().__init__(Database.temporary(Base.metadata))
