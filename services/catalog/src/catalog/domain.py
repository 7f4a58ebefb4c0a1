"""The catalog's rules: products, stock and reservations, and the units-sold read model kept
from the orders' events, independent of gRPC, of the broker and of how the data is stored (a
Store: see catalog.store)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from keel.data import new_id


class NotFoundError(Exception):
    """No product with that id."""


class MixedCurrenciesError(Exception):
    """A reservation's products are priced in different currencies."""


class ReleasedError(Exception):
    """The order's stock was released (or released before anything was reserved): a
    reservation for it arriving now is a late copy, and reserves nothing."""


class OutOfStockError(Exception):
    """A reservation asks for more units than are in stock."""

    def __init__(self, shortages: dict[str, tuple[int, int]]) -> None:
        super().__init__("not enough stock")
        self.shortages = shortages  # product id → (asked, available)


@dataclass(frozen=True)
class Product:
    product_id: str
    title: str
    price_cents: int
    currency: str
    stock: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    units_sold: int = 0  # the read model: follows the orders' events (eventually consistent)


@dataclass(frozen=True)
class Reservation:
    order_id: str
    lines: tuple[tuple[str, int], ...]
    total_cents: int
    currency: str


class ConflictError(Exception):
    """A concurrent change got there first (e.g. two reservations for one order at once);
    nothing was changed: try again."""


class Transaction(Protocol):
    """The catalog's data within one transaction (see Store.transaction)."""

    async def get(self, product_id: str) -> Product | None: ...
    async def lock(self, product_ids: Collection[str]) -> dict[str, Product]:
        """The products with these ids that exist, locked until the transaction ends."""
        ...

    async def add(self, product: Product) -> None: ...
    async def put(self, product: Product) -> None:
        """Store a changed product (one that exists)."""
        ...

    async def page(self, after: str, limit: int) -> list[Product]:
        """Up to `limit` products with ids after `after` (all for ""), in id order."""
        ...

    async def reservation(self, order_id: str) -> Reservation | None: ...
    async def add_reservation(self, reservation: Reservation) -> None: ...
    async def drop_reservation(self, order_id: str) -> None: ...
    async def released(self, order_id: str) -> bool:
        """Whether the order's stock was released."""
        ...

    async def add_released(self, order_id: str) -> None:
        """Record that the order's stock was released (once)."""
        ...

    async def add_units_sold(self, product_id: str, units: int) -> None:
        """Add `units` (negative: take them away) to the product's units sold."""
        ...


class Store(Protocol):
    """Where the catalog keeps its data."""

    def transaction(self, *, readonly: bool = False) -> AbstractAsyncContextManager[Transaction]:
        """One transaction: committed when the block ends, undone when it raises;
        ConflictError when a concurrent transaction made it impossible. A `readonly` one
        only reads (and need not wait for writers)."""
        ...


class Catalog:
    """Products and stock. Reservations are idempotent per order id; once an order's stock
    is released (even before anything was reserved), it cannot be reserved again."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, product_id: str) -> Product:
        async with self.store.transaction(readonly=True) as tx:
            product = await tx.get(product_id)
        if product is None:
            raise NotFoundError(product_id)
        return product

    async def missing(self, product_ids: Collection[str]) -> set[str]:
        """The ids among `product_ids` that name no product."""
        async with self.store.transaction(readonly=True) as tx:
            return {p for p in set(product_ids) if await tx.get(p) is None}

    async def page(self, after: str, limit: int) -> tuple[list[Product], str | None]:
        """Up to `limit` products after id `after`, and the last one's id if more follow."""
        async with self.store.transaction(readonly=True) as tx:
            products = await tx.page(after, limit + 1)
        if len(products) > limit:
            return products[:limit], products[limit - 1].product_id
        return products, None

    async def create(
        self,
        title: str,
        price_cents: int,
        currency: str,
        stock: int = 0,
        labels: dict[str, str] | None = None,
    ) -> Product:
        product = Product(new_id("p"), title, price_cents, currency, stock, dict(labels or {}))
        async with self.store.transaction() as tx:
            await tx.add(product)
        return product

    async def update(self, product_id: str, **changes: object) -> Product:
        async with self.store.transaction() as tx:
            found = await tx.lock([product_id])
            if product_id not in found:
                raise NotFoundError(product_id)
            product = replace(found[product_id], **changes)  # type: ignore[arg-type]
            await tx.put(product)
        return product

    async def reserve(self, order_id: str, lines: list[tuple[str, int]]) -> Reservation:
        async with self.store.transaction() as tx:
            existing = await tx.reservation(order_id)
            if existing is not None:
                return existing
            if await tx.released(order_id):
                raise ReleasedError(order_id)
            found = await tx.lock([product_id for product_id, _ in lines])
            for product_id, _ in lines:
                if product_id not in found:
                    raise NotFoundError(product_id)
            products = [found[product_id] for product_id, _ in lines]
            wanted: dict[str, int] = {}
            for product_id, quantity in lines:
                wanted[product_id] = wanted.get(product_id, 0) + quantity
            shortages = {
                p.product_id: (wanted[p.product_id], p.stock)
                for p in products
                if wanted[p.product_id] > p.stock
            }
            if shortages:
                raise OutOfStockError(shortages)
            currencies = {p.currency for p in products}
            if len(currencies) > 1:
                raise MixedCurrenciesError(sorted(currencies))
            total = sum(p.price_cents * q for p, (_, q) in zip(products, lines, strict=True))
            for product_id, quantity in wanted.items():
                product = found[product_id]
                await tx.put(replace(product, stock=product.stock - quantity))
            reservation = Reservation(order_id, tuple(lines), total, currencies.pop())
            await tx.add_reservation(reservation)
        return reservation

    async def release(self, order_id: str) -> None:
        """Give the order's stock back (nothing reserved: nothing to give back); a
        reservation for the order arriving later is refused (ReleasedError)."""
        async with self.store.transaction() as tx:
            if not await tx.released(order_id):
                await tx.add_released(order_id)
            reservation = await tx.reservation(order_id)
            if reservation is None:
                return
            found = await tx.lock([product_id for product_id, _ in reservation.lines])
            for product_id, quantity in reservation.lines:
                product = found[product_id]
                found[product_id] = replace(product, stock=product.stock + quantity)
                await tx.put(found[product_id])
            await tx.drop_reservation(order_id)


async def count_sold(tx: Transaction, lines: Iterable[tuple[str, int]], sign: int = 1) -> None:
    """The read model's rule: a placed order's lines add to each product's units sold
    (`sign=1`), a cancelled order's take them away (`sign=-1`). Run it in the transaction that
    records the event as handled, so that each event counts once."""
    units: dict[str, int] = {}
    for product_id, quantity in lines:
        units[product_id] = units.get(product_id, 0) + sign * quantity
    for product_id in sorted(units):  # one lock order: no deadlocks between handlers
        await tx.add_units_sold(product_id, units[product_id])
