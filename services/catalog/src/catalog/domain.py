"""The catalog's rules: products and their lifecycle, stock, restocking and reservations, and
the units-sold read model kept from the orders' events, independent of gRPC, of the broker, of
the environment and of how the data is stored (a Store: catalog.store on a database,
catalog.memory in memory). The shop's settings come in as a Policy (catalog.model)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Protocol

from keel.data import new_id

from catalog.model import (
    ArchivedError,
    ConflictError,
    CurrencyError,
    LimitError,
    NotFoundError,
    OutOfStockError,
    Policy,
    Product,
    ProductState,
    ReleasedError,
    Reservation,
)

__all__ = [
    "ArchivedError",
    "Catalog",
    "ConflictError",
    "CurrencyError",
    "LimitError",
    "NotFoundError",
    "OutOfStockError",
    "Policy",
    "Product",
    "ProductState",
    "ReleasedError",
    "Reservation",
    "Store",
    "Transaction",
    "count_sold",
]


class Transaction(Protocol):
    """The catalog's data within one transaction (see Store.transaction)."""

    async def get(self, product_id: str) -> Product | None: ...
    async def lock(self, product_ids: Collection[str]) -> dict[str, Product]:
        """The products with these ids that exist, locked until the transaction ends."""
        ...

    async def add(self, product: Product) -> None:
        """Store a new product (ConflictError, at the latest when the transaction ends, if
        its id is taken)."""
        ...

    async def put(self, product: Product) -> None:
        """Store a changed product (one that exists)."""
        ...

    async def page(self, after: str, limit: int, *, archived: bool = False) -> list[Product]:
        """Up to `limit` products with ids after `after` (all for ""), in id order; archived
        ones only if `archived`."""
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
    """Products and stock under the shop's `policy`. Reservations are idempotent per order id;
    once an order's stock is released (even before anything was reserved), it cannot be
    reserved again. Archived products are neither reserved nor restocked."""

    def __init__(self, store: Store, policy: Policy | None = None) -> None:
        self.store = store
        self.policy = policy or Policy()

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

    async def page(
        self, after: str, limit: int = 0, *, archived: bool = False
    ) -> tuple[list[Product], str | None]:
        """Up to `limit` products after id `after` (0: the policy's default page size, never
        more than its maximum), archived ones only if `archived`; and the last one's id if
        more follow."""
        limit = self.policy.page_size(limit)
        async with self.store.transaction(readonly=True) as tx:
            products = await tx.page(after, limit + 1, archived=archived)
        if len(products) > limit:
            return products[:limit], products[limit - 1].product_id
        return products, None

    def _check_currency(self, currency: str) -> None:
        if currency != self.policy.currency:
            raise CurrencyError(self.policy.currency)

    async def create(
        self,
        title: str,
        price_cents: int,
        currency: str = "",
        stock: int = 0,
        labels: dict[str, str] | None = None,
    ) -> Product:
        """A new ACTIVE product, priced in the shop's currency (`currency` "": that one;
        another: CurrencyError)."""
        currency = currency or self.policy.currency
        self._check_currency(currency)
        product = Product(new_id("p"), title, price_cents, currency, stock, dict(labels or {}))
        async with self.store.transaction() as tx:
            await tx.add(product)
        return product

    async def update(self, product_id: str, **changes: object) -> Product:
        """The product with `changes` (title, price_cents, currency, labels) made; a currency
        set to "" is the shop's, as at creation."""
        if "currency" in changes:
            changes["currency"] = changes["currency"] or self.policy.currency
            self._check_currency(str(changes["currency"]))
        async with self.store.transaction() as tx:
            product = replace(await self._locked(tx, product_id), **changes)  # type: ignore[arg-type]
            await tx.put(product)
        return product

    async def restock(self, product_id: str, quantity: int) -> Product:
        """Add `quantity` units (1 to the policy's max_restock) to an active product's stock."""
        if not 0 < quantity <= self.policy.max_restock:
            raise LimitError(self.policy.max_restock)
        async with self.store.transaction() as tx:
            product = await self._locked(tx, product_id)
            if product.state is ProductState.ARCHIVED:
                raise ArchivedError([product_id])
            product = replace(product, stock=product.stock + quantity)
            await tx.put(product)
        return product

    async def archive(self, product_id: str) -> Product:
        """Take the product off sale (already archived: unchanged)."""
        return await self._set_state(product_id, ProductState.ARCHIVED)

    async def unarchive(self, product_id: str) -> Product:
        """Put the product back on sale (already active: unchanged)."""
        return await self._set_state(product_id, ProductState.ACTIVE)

    async def _set_state(self, product_id: str, state: ProductState) -> Product:
        async with self.store.transaction() as tx:
            product = await self._locked(tx, product_id)
            if product.state is not state:
                product = replace(product, state=state)
                await tx.put(product)
        return product

    @staticmethod
    async def _locked(tx: Transaction, product_id: str) -> Product:
        found = await tx.lock([product_id])
        if product_id not in found:
            raise NotFoundError(product_id)
        return found[product_id]

    async def reserve(self, order_id: str, lines: list[tuple[str, int]]) -> Reservation:
        """Take the lines' units out of stock for the order, all or none; its total, in the
        shop's currency. The same order again: the first reservation."""
        over = [
            i for i, (_, quantity) in enumerate(lines) if quantity > self.policy.max_line_quantity
        ]
        if over:
            raise LimitError(self.policy.max_line_quantity, over)
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
            archived = [p.product_id for p in products if p.state is ProductState.ARCHIVED]
            if archived:
                raise ArchivedError(archived)
            foreign = [p.product_id for p in products if p.currency != self.policy.currency]
            if foreign:
                raise CurrencyError(self.policy.currency, foreign)
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
            total = sum(p.price_cents * q for p, (_, q) in zip(products, lines, strict=True))
            for product_id, quantity in wanted.items():
                product = found[product_id]
                await tx.put(replace(product, stock=product.stock - quantity))
            reservation = Reservation(order_id, tuple(lines), total, self.policy.currency)
            await tx.add_reservation(reservation)
        return reservation

    async def release(self, order_id: str) -> None:
        """Give the order's stock back (nothing reserved: nothing to give back), archived
        products included; a reservation for the order arriving later is refused
        (ReleasedError)."""
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
