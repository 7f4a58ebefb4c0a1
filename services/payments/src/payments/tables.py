"""Payments' tables (SQLAlchemy): its migrations are generated from and checked against
these (`keel db revision payments -m ...`, `keel db check payments`)."""

from __future__ import annotations

from datetime import datetime

from keel.data import id_type
from keel.idempotency import tables as idempotency
from sqlalchemy import BigInteger, DateTime, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Payments' tables; `[tool.keel] models` in pyproject.toml names it."""


idempotency.add_to(Base.metadata)  # keel_idempotency: Authorize, Capture, Void by key


class PaymentRow(Base):
    __tablename__ = "payments"

    payment_id: Mapped[str] = mapped_column(id_type(), primary_key=True)
    order_id: Mapped[str] = mapped_column(id_type(), unique=True)  # one payment per order
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[str] = mapped_column(String(16))
    decline_reason: Mapped[str] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True))
