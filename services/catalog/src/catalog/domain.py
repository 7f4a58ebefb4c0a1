"""The catalog's rules: products, stock and reservations, independent of gRPC."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol


class NotFoundError(Exception):
    """No product with that id."""


class MixedCurrenciesError(Exception):
    """A reservation's products are priced in different currencies."""


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


@dataclass(frozen=True)
class Reservation:
    order_id: str
    lines: tuple[tuple[str, int], ...]
    total_cents: int
    currency: str


class Store(Protocol):
    """Where the catalog keeps its data."""

    def get(self, product_id: str) -> Product | None: ...
    def put(self, product: Product) -> None: ...
    def page(self, offset: int, limit: int) -> list[Product]: ...
    def count(self) -> int: ...
    def next_id(self) -> str: ...
    def reservation(self, order_id: str) -> Reservation | None: ...
    def put_reservation(self, reservation: Reservation) -> None: ...
    def drop_reservation(self, order_id: str) -> None: ...


class Catalog:
    """Products and stock. Reservations are idempotent per order id."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, product_id: str) -> Product:
        product = self.store.get(product_id)
        if product is None:
            raise NotFoundError(product_id)
        return product

    def exists(self, product_id: str) -> bool:
        return self.store.get(product_id) is not None

    def page(self, offset: int, limit: int) -> tuple[list[Product], int | None]:
        products = self.store.page(offset, limit)
        following = offset + len(products)
        return products, following if following < self.store.count() else None

    def create(self, title: str, price_cents: int, currency: str, stock: int = 0) -> Product:
        product = Product(self.store.next_id(), title, price_cents, currency, stock)
        self.store.put(product)
        return product

    def update(self, product_id: str, **changes: object) -> Product:
        product = replace(self.get(product_id), **changes)  # type: ignore[arg-type]
        self.store.put(product)
        return product

    def reserve(self, order_id: str, lines: list[tuple[str, int]]) -> Reservation:
        existing = self.store.reservation(order_id)
        if existing is not None:
            return existing
        products = [self.get(product_id) for product_id, _ in lines]
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
            product = self.get(product_id)
            self.store.put(replace(product, stock=product.stock - quantity))
        reservation = Reservation(order_id, tuple(lines), total, currencies.pop())
        self.store.put_reservation(reservation)
        return reservation

    def release(self, order_id: str) -> None:
        reservation = self.store.reservation(order_id)
        if reservation is None:
            return
        for product_id, quantity in reservation.lines:
            product = self.get(product_id)
            self.store.put(replace(product, stock=product.stock + quantity))
        self.store.drop_reservation(order_id)
