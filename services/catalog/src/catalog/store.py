"""In-memory storage for the catalog (a database comes with a later issue)."""

from __future__ import annotations

import itertools

from catalog.domain import Product, Reservation


class MemoryStore:
    """Implements catalog.domain.Store in a dict."""

    def __init__(self) -> None:
        self._products: dict[str, Product] = {}
        self._reservations: dict[str, Reservation] = {}
        self._ids = itertools.count(1)

    def get(self, product_id: str) -> Product | None:
        return self._products.get(product_id)

    def put(self, product: Product) -> None:
        self._products[product.product_id] = product

    def page(self, offset: int, limit: int) -> list[Product]:
        ordered = sorted(self._products.values(), key=lambda p: p.product_id)
        return ordered[offset : offset + limit]

    def count(self) -> int:
        return len(self._products)

    def next_id(self) -> str:
        while True:
            candidate = f"p_{next(self._ids)}"
            if candidate not in self._products:
                return candidate

    def reservation(self, order_id: str) -> Reservation | None:
        return self._reservations.get(order_id)

    def put_reservation(self, reservation: Reservation) -> None:
        self._reservations[reservation.order_id] = reservation

    def drop_reservation(self, order_id: str) -> None:
        self._reservations.pop(order_id, None)


def seed(store: MemoryStore) -> MemoryStore:
    """A few products, so a fresh `make run` has something to sell."""
    for product in (
        Product("p_kettle", "Kettle", 2999, "EUR", stock=25, labels={"colour": "steel"}),
        Product("p_mug", "Mug", 899, "EUR", stock=200, labels={"colour": "blue"}),
        Product("p_teapot", "Teapot", 3499, "EUR", stock=10),
    ):
        store.put(product)
    return store
