"""Orders' tables (SQLAlchemy), with Keel's outbox: its migrations are generated from and
checked against these (`keel db revision orders -m ...`, `keel db check orders`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from keel.data import id_type
from keel.events import tables
from keel.saga import tables as sagas
from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Orders' tables; `[tool.keel] models` in pyproject.toml names it."""


tables.add_to(Base.metadata)  # keel_outbox (OrderPlaced, OrderCancelled) and keel_inbox
sagas.add_to(Base.metadata)  # keel_saga, keel_saga_step: placing and cancelling (orders.placing)


class OrderRow(Base):
    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_customer_order", "customer_id", "order_id"),)

    order_id: Mapped[str] = mapped_column(id_type(), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    total_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    payment: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    """Why it was REJECTED or CANCELLED (the saga's error)."""


class OrderLineRow(Base):
    __tablename__ = "order_lines"

    order_id: Mapped[str] = mapped_column(
        ForeignKey("orders.order_id", ondelete="CASCADE"), primary_key=True
    )
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)


class OrderRequestRow(Base):
    """The order each CreateOrder request id made, per customer (retries return it)."""

    __tablename__ = "order_requests"

    customer_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.order_id", ondelete="CASCADE"))
