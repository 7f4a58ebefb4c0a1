"""The catalog's data in its own database (keel.data): implements catalog.domain.Store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from keel.data import Database, Joined, conflicts
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.domain import ConflictError, Product, ProductState, Reservation
from catalog.tables import (
    Base,
    ProductRow,
    ReleasedRow,
    ReservationLineRow,
    ReservationRow,
    UnitsSoldRow,
)


def _product(row: ProductRow, units_sold: int = 0) -> Product:
    created = row.created if row.created.tzinfo else row.created.replace(tzinfo=UTC)
    return Product(
        row.product_id,
        row.title,
        row.price_cents,
        row.currency,
        row.stock,
        dict(row.labels),
        created,
        units_sold,
        ProductState(row.state),
    )


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


class SqlTransaction:
    """catalog.domain.Transaction on one AsyncSession."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _units_sold(self, product_ids: Collection[str]) -> dict[str, int]:
        rows = await self.session.execute(
            select(UnitsSoldRow.product_id, UnitsSoldRow.units).where(
                UnitsSoldRow.product_id.in_(sorted(set(product_ids)))
            )
        )
        return {product_id: units for product_id, units in rows}

    async def get(self, product_id: str) -> Product | None:
        row = await self.session.get(ProductRow, product_id)
        if row is None:
            return None
        return _product(row, (await self._units_sold([product_id])).get(product_id, 0))

    async def lock(self, product_ids: Collection[str]) -> dict[str, Product]:
        rows = await self.session.scalars(
            select(ProductRow)
            .where(ProductRow.product_id.in_(sorted(set(product_ids))))
            .order_by(ProductRow.product_id)  # one lock order: no deadlocks
            .with_for_update()  # PostgreSQL; SQLite's write lock is taken at BEGIN
        )
        found = list(rows)
        sold = await self._units_sold([row.product_id for row in found])
        return {row.product_id: _product(row, sold.get(row.product_id, 0)) for row in found}

    async def add(self, product: Product) -> None:
        self.session.add(
            ProductRow(
                product_id=product.product_id,
                title=product.title,
                price_cents=product.price_cents,
                currency=product.currency,
                stock=product.stock,
                labels=dict(product.labels),
                created=_utc(product.created),
                state=product.state.value,
            )
        )
        await self.session.flush()

    async def put(self, product: Product) -> None:
        row = await self.session.get(ProductRow, product.product_id)
        if row is None:
            raise ConflictError(f"product {product.product_id} no longer exists")
        row.title = product.title
        row.price_cents = product.price_cents
        row.currency = product.currency
        row.stock = product.stock
        row.labels = dict(product.labels)
        row.state = product.state.value

    async def page(self, after: str, limit: int, *, archived: bool = False) -> list[Product]:
        query = (
            select(ProductRow, UnitsSoldRow.units)
            .outerjoin(UnitsSoldRow, UnitsSoldRow.product_id == ProductRow.product_id)
            .where(ProductRow.product_id > after)
        )
        if not archived:
            query = query.where(ProductRow.state == ProductState.ACTIVE.value)
        rows = await self.session.execute(query.order_by(ProductRow.product_id).limit(limit))
        return [_product(row, units or 0) for row, units in rows]

    async def reservation(self, order_id: str) -> Reservation | None:
        row = await self.session.get(ReservationRow, order_id)
        if row is None:
            return None
        lines = await self.session.scalars(
            select(ReservationLineRow)
            .where(ReservationLineRow.order_id == order_id)
            .order_by(ReservationLineRow.line)
        )
        return Reservation(
            order_id,
            tuple((line.product_id, line.quantity) for line in lines),
            row.total_cents,
            row.currency,
        )

    async def add_reservation(self, reservation: Reservation) -> None:
        self.session.add(
            ReservationRow(
                order_id=reservation.order_id,
                total_cents=reservation.total_cents,
                currency=reservation.currency,
            )
        )
        await self.session.flush()
        self.session.add_all(
            ReservationLineRow(
                order_id=reservation.order_id, line=index, product_id=product_id, quantity=quantity
            )
            for index, (product_id, quantity) in enumerate(reservation.lines)
        )
        await self.session.flush()

    async def drop_reservation(self, order_id: str) -> None:
        await self.session.execute(
            delete(ReservationLineRow).where(ReservationLineRow.order_id == order_id)
        )
        await self.session.execute(
            delete(ReservationRow).where(ReservationRow.order_id == order_id)
        )

    async def released(self, order_id: str) -> bool:
        return await self.session.get(ReleasedRow, order_id) is not None

    async def add_released(self, order_id: str) -> None:
        self.session.add(ReleasedRow(order_id=order_id, released_at=datetime.now(UTC)))
        await self.session.flush()

    async def add_units_sold(self, product_id: str, units: int) -> None:
        """One upsert: concurrent handlers (several workers) neither conflict nor lose units."""
        dialect = postgresql if self.session.get_bind().dialect.name == "postgresql" else sqlite
        insert = dialect.insert(UnitsSoldRow).values(product_id=product_id, units=units)
        await self.session.execute(
            insert.on_conflict_do_update(
                index_elements=[UnitsSoldRow.product_id],
                set_={"units": UnitsSoldRow.units + insert.excluded.units},
            )
        )


class SqlStore:
    """The catalog's Store on a keel.data.Database (migrated with services/catalog/migrations)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: tuple[Product, ...] = ()
        self._seeding = asyncio.Lock()

    def seed(self, products: Iterable[Product]) -> None:
        """Products to add, where no product has their id, before this process's first
        transaction (each worker and replica may try: the first one adds them)."""
        self._pending += tuple(products)

    async def _add_pending(self) -> None:
        async with self._seeding:  # concurrent first calls wait for the seed
            pending = self._pending
            if not pending:
                return
            try:
                async with self.db.transaction() as session:
                    known = set(
                        await session.scalars(
                            select(ProductRow.product_id).where(
                                ProductRow.product_id.in_([p.product_id for p in pending])
                            )
                        )
                    )
                    tx = SqlTransaction(session)
                    for product in pending:
                        if product.product_id not in known:
                            await tx.add(product)
            except IntegrityError:
                pass  # another process added them first
            self._pending = ()

    async def ready(self) -> None:
        """Add the seed products if not done yet (before work in a session of its own)."""
        if self._pending:
            await self._add_pending()  # (a failure leaves them pending for the next call)

    def joined(self, session: AsyncSession) -> Joined[SqlTransaction]:
        """This store's data within `session` (a transaction opened by a keyed call)."""
        return Joined(session, SqlTransaction, ConflictError)

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[SqlTransaction]:
        """One transaction (catalog.domain.Store)."""
        if self._pending:
            await self._add_pending()  # (a failure leaves them pending for the next call)
        with conflicts(ConflictError):
            async with self.db.transaction(readonly=readonly) as session:
                yield SqlTransaction(session)

    async def close(self) -> None:
        """Close the database's connections (the server calls it when it stops)."""
        await self.db.dispose()


class MemoryStore(SqlStore):
    """The same store on a private throwaway SQLite database (its tables made from the models),
    removed when closed: for tests and examples that need the service (keyed calls need a
    database). The domain alone runs on catalog.memory.InMemoryStore, no database at all."""

    def __init__(self) -> None:
        super().__init__(Database.temporary(Base.metadata))


class Seedable(Protocol):
    def seed(self, products: Iterable[Product]) -> None: ...


StoreT = TypeVar("StoreT", bound=Seedable)

SEED = (
    Product("p_kettle", "Kettle", 2999, "EUR", stock=25, labels={"colour": "steel"}),
    Product("p_mug", "Mug", 899, "EUR", stock=200, labels={"colour": "blue"}),
    Product("p_teapot", "Teapot", 3499, "EUR", stock=10),
)
"""A few products, so a fresh `make run` has something to sell."""


def seed(store: StoreT, currency: str = "EUR") -> StoreT:
    """`store`, with the SEED products (priced in `currency`, the shop's) added where missing
    before its first transaction."""
    store.seed(replace(product, currency=currency) for product in SEED)
    return store
