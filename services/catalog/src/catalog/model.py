"""The catalog's values and refusals: products, reservations, the shop's policy and the errors
its rules raise. Plain data: no gRPC, no database, no environment."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime


class ProductState(enum.Enum):
    """Where a product is in its lifecycle (AIP-216)."""

    ACTIVE = "ACTIVE"
    """On sale: listed and reservable."""
    ARCHIVED = "ARCHIVED"
    """Off sale: not reservable nor restocked, listed only when asked, still readable."""


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
    state: ProductState = ProductState.ACTIVE


@dataclass(frozen=True)
class Reservation:
    order_id: str
    lines: tuple[tuple[str, int], ...]
    total_cents: int
    currency: str


@dataclass(frozen=True)
class Policy:
    """The shop's own settings, as the rules need them (catalog.settings reads them)."""

    currency: str = "EUR"
    """What the shop sells in: a product created without a currency is priced in it, products
    in another are refused, and reservation totals are in it."""
    default_page_size: int = 50
    """Products on a page when the caller names no page size."""
    max_page_size: int = 500
    """The most products on a page (a larger page size gets this many)."""
    max_line_quantity: int = 1000
    """The most units of one line of a reservation."""
    max_restock: int = 100_000
    """The most units one restock adds."""

    def page_size(self, asked: int) -> int:
        """The page size for a caller's `asked` (0: the default), within the maximum."""
        return min(asked or self.default_page_size, self.max_page_size)


class NotFoundError(Exception):
    """No product with that id."""


class ConflictError(Exception):
    """A concurrent change got there first (e.g. two reservations for one order at once);
    nothing was changed: try again."""


class ReleasedError(Exception):
    """The order's stock was released (or released before anything was reserved): a
    reservation for it arriving now is a late copy, and reserves nothing."""


class OutOfStockError(Exception):
    """A reservation asks for more units than are in stock."""

    def __init__(self, shortages: dict[str, tuple[int, int]]) -> None:
        super().__init__("not enough stock")
        self.shortages = shortages  # product id → (asked, available)


class ArchivedError(Exception):
    """Products that are archived (off sale): not reserved, not restocked."""

    def __init__(self, product_ids: Sequence[str]) -> None:
        super().__init__(f"archived: {', '.join(product_ids)}")
        self.product_ids = tuple(product_ids)


class CurrencyError(Exception):
    """A price in another currency than the shop's: `product_ids` names the products so
    priced (none: the price given)."""

    def __init__(self, currency: str, product_ids: Sequence[str] = ()) -> None:
        super().__init__(f"the shop sells in {currency}")
        self.currency = currency
        self.product_ids = tuple(product_ids)


class LimitError(Exception):
    """A quantity over the shop's limit (Policy): `lines` are the indexes of the reservation's
    lines over it (empty for a restock)."""

    def __init__(self, limit: int, lines: Sequence[int] = ()) -> None:
        super().__init__(f"at most {limit} units")
        self.limit = limit
        self.lines = tuple(lines)
