"""The catalog's Store in plain Python objects (catalog.domain.Store, no database): for unit
tests of the rules and for examples. Writers take turns (one lock, as SQLite's write lock); a
transaction works on a copy of the data that replaces it when the block ends without error, so
a failed one changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

from catalog.domain import ConflictError, Product, ProductState, Reservation


@dataclass
class _Data:
    products: dict[str, Product] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)
    units_sold: dict[str, int] = field(default_factory=dict)

    def copy(self) -> _Data:
        return _Data(
            dict(self.products),
            dict(self.reservations),
            set(self.released),
            dict(self.units_sold),
        )


class InMemoryTransaction:
    """catalog.domain.Transaction on one copy of the data."""

    def __init__(self, data: _Data) -> None:
        self.data = data

    def _read(self, product: Product) -> Product:
        return replace(product, units_sold=self.data.units_sold.get(product.product_id, 0))

    async def get(self, product_id: str) -> Product | None:
        product = self.data.products.get(product_id)
        return None if product is None else self._read(product)

    async def lock(self, product_ids: Collection[str]) -> dict[str, Product]:
        found = {p: self.data.products.get(p) for p in sorted(set(product_ids))}
        return {p: self._read(product) for p, product in found.items() if product is not None}

    async def add(self, product: Product) -> None:
        if product.product_id in self.data.products:
            raise ConflictError(f"product {product.product_id} exists")
        self.data.products[product.product_id] = replace(product, units_sold=0)

    async def put(self, product: Product) -> None:
        if product.product_id not in self.data.products:
            raise ConflictError(f"product {product.product_id} no longer exists")
        self.data.products[product.product_id] = replace(product, units_sold=0)

    async def page(self, after: str, limit: int, *, archived: bool = False) -> list[Product]:
        ids = sorted(p for p in self.data.products if p > after)
        products = [self.data.products[p] for p in ids]
        shown = [p for p in products if archived or p.state is ProductState.ACTIVE]
        return [self._read(p) for p in shown[:limit]]

    async def reservation(self, order_id: str) -> Reservation | None:
        return self.data.reservations.get(order_id)

    async def add_reservation(self, reservation: Reservation) -> None:
        if reservation.order_id in self.data.reservations:
            raise ConflictError(f"order {reservation.order_id} is reserved")
        self.data.reservations[reservation.order_id] = reservation

    async def drop_reservation(self, order_id: str) -> None:
        self.data.reservations.pop(order_id, None)

    async def released(self, order_id: str) -> bool:
        return order_id in self.data.released

    async def add_released(self, order_id: str) -> None:
        self.data.released.add(order_id)

    async def add_units_sold(self, product_id: str, units: int) -> None:
        self.data.units_sold[product_id] = self.data.units_sold.get(product_id, 0) + units


class InMemoryStore:
    """catalog.domain.Store in memory, holding `products` to begin with."""

    def __init__(self, products: Iterable[Product] = ()) -> None:
        self._data = _Data(products={p.product_id: p for p in products})
        self._writing = asyncio.Lock()

    def seed(self, products: Iterable[Product]) -> None:
        """Add `products` where no product has their id (catalog.store.seed)."""
        for product in products:
            self._data.products.setdefault(product.product_id, product)

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[InMemoryTransaction]:
        """One transaction (catalog.domain.Store): a readonly one reads a snapshot at once; a
        writer waits for the one before it."""
        if readonly:
            yield InMemoryTransaction(self._data.copy())
            return
        async with self._writing:
            work = self._data.copy()
            yield InMemoryTransaction(work)
            self._data = work
