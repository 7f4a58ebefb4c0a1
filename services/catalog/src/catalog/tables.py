"""The catalog's tables (SQLAlchemy), with Keel's inbox: its migrations are generated from and
checked against these (`keel db revision catalog -m ...`, `keel db check catalog`)."""

from __future__ import annotations

from datetime import datetime

from keel.data import id_type
from keel.events import tables
from keel.idempotency import tables as idempotency
from sqlalchemy import JSON, BigInteger, CheckConstraint, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """The catalog's tables; `[tool.keel] models` in pyproject.toml names it."""


tables.add_to(Base.metadata)  # keel_inbox (the orders' events handled) and keel_outbox
idempotency.add_to(Base.metadata)  # keel_idempotency: keyed calls (restock, reserve, release)


class ProductRow(Base):
    __tablename__ = "products"
    __table_args__ = (CheckConstraint("stock >= 0", name="stock_not_negative"),)

    product_id: Mapped[str] = mapped_column(id_type(), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    price_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    stock: Mapped[int] = mapped_column(Integer)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(16), server_default="ACTIVE")
    """ACTIVE or ARCHIVED (catalog.domain.ProductState)."""


class ReservationRow(Base):
    __tablename__ = "reservations"

    order_id: Mapped[str] = mapped_column(id_type(), primary_key=True)
    total_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))


class ReservationLineRow(Base):
    __tablename__ = "reservation_lines"

    order_id: Mapped[str] = mapped_column(
        ForeignKey("reservations.order_id", ondelete="CASCADE"), primary_key=True
    )
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.product_id"))
    quantity: Mapped[int] = mapped_column(Integer)


class UnitsSoldRow(Base):
    """The units-sold read model: per product, units in placed orders less those cancelled,
    kept from the orders' events (catalog.events)."""

    __tablename__ = "units_sold"

    product_id: Mapped[str] = mapped_column(id_type(), primary_key=True)
    units: Mapped[int] = mapped_column(BigInteger)


class ReleasedRow(Base):
    """Orders whose stock was released: a reservation arriving for them later is refused."""

    __tablename__ = "released_orders"

    order_id: Mapped[str] = mapped_column(id_type(), primary_key=True)
    released_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
