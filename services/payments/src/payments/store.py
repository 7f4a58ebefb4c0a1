"""Payments' data in its own database (keel.data): implements payments.domain.Store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from keel.data import Database, Joined, conflicts
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from payments.domain import ConflictError, Payment, State
from payments.tables import Base, PaymentRow


def _utc(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes: they were written in UTC."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _payment(row: PaymentRow) -> Payment:
    return Payment(
        row.payment_id,
        row.order_id,
        row.amount_cents,
        row.currency,
        State(row.state),
        row.decline_reason,
        _utc(row.updated),
    )


class SqlTransaction:
    """payments.domain.Transaction on one AsyncSession."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, payment_id: str) -> Payment | None:
        row = await self.session.get(PaymentRow, payment_id)
        return None if row is None else _payment(row)

    async def lock(self, payment_id: str) -> Payment | None:
        row = await self.session.scalar(
            select(PaymentRow).where(PaymentRow.payment_id == payment_id).with_for_update()
        )
        return None if row is None else _payment(row)

    async def of_order(self, order_id: str) -> Payment | None:
        row = await self.session.scalar(select(PaymentRow).where(PaymentRow.order_id == order_id))
        return None if row is None else _payment(row)

    async def add(self, payment: Payment) -> None:
        self.session.add(
            PaymentRow(
                payment_id=payment.payment_id,
                order_id=payment.order_id,
                amount_cents=payment.amount_cents,
                currency=payment.currency,
                state=payment.state.value,
                decline_reason=payment.decline_reason,
                created=_utc(payment.updated),
                updated=_utc(payment.updated),
            )
        )
        await self.session.flush()

    async def put(self, payment: Payment) -> None:
        row = await self.session.get(PaymentRow, payment.payment_id)
        if row is None:
            raise ConflictError(f"payment {payment.payment_id} no longer exists")
        row.state = payment.state.value
        row.decline_reason = payment.decline_reason
        row.updated = _utc(payment.updated)


class SqlStore:
    """Payments' Store on a keel.data.Database (migrated with services/payments/migrations)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[SqlTransaction]:
        """One transaction (payments.domain.Store)."""
        with conflicts(ConflictError):
            async with self.db.transaction(readonly=readonly) as session:
                yield SqlTransaction(session)

    def joined(self, session: AsyncSession) -> Joined[SqlTransaction]:
        """This store's data within `session` (a transaction opened by a keyed call)."""
        return Joined(session, SqlTransaction, ConflictError)

    async def close(self) -> None:
        """Close the database's connections (the server calls it when it stops)."""
        await self.db.dispose()


class MemoryStore(SqlStore):
    """The same store on a private throwaway SQLite database (its tables made from the models),
    removed when closed: for tests and examples."""

    def __init__(self) -> None:
        super().__init__(Database.temporary(Base.metadata))
