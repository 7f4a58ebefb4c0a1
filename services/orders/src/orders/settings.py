"""Orders' own settings, from `ORDERS_*` environment variables (read once at start-up).

| variable | meaning | default |
| --- | --- | --- |
| ORDERS_CURRENCY | the currency orders are placed in (stock priced in another is refused) | EUR |
| ORDERS_MAX_LINES | the most lines one order may have | 50 |
| ORDERS_MAX_QUANTITY | the most units of one line | 1000 |
| ORDERS_DEFAULT_PAGE_SIZE | ListOrders' page size when the request gives none | 50 |
| ORDERS_MAX_PAGE_SIZE | the largest ListOrders page (a larger page_size is lowered to it) | 500 |
| ORDERS_WATCH_INTERVAL | seconds between WatchOrder's reads of another worker's changes | 0.5 |

An invalid value stops start-up with a message naming the setting.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrdersSettings(BaseSettings):
    """The shop's limits on orders, and how lists and watches behave."""

    model_config = SettingsConfigDict(env_prefix="ORDERS_", frozen=True)

    currency: str = Field(default="EUR", pattern="^[A-Z]{3}$")
    """ISO 4217 code: an order whose stock the catalog prices in another currency is REJECTED."""
    max_lines: int = Field(default=50, ge=1, le=1000)
    """The most lines one order may have (INVALID_ARGUMENT beyond)."""
    max_quantity: int = Field(default=1000, ge=1, le=1000)
    """The most units one line may ask for (INVALID_ARGUMENT beyond; the proto allows 1000)."""
    default_page_size: int = Field(default=50, ge=1, le=500)
    """ListOrders' page size when the request gives none."""
    max_page_size: int = Field(default=500, ge=1, le=500)
    """The largest ListOrders page; a larger page_size is lowered to it (the proto allows 500)."""
    watch_interval: float = Field(default=0.5, gt=0, le=60)
    """Seconds between a watcher's reads of its order (this process's changes wake it at once)."""

    @model_validator(mode="after")
    def _pages(self) -> Self:
        if self.default_page_size > self.max_page_size:
            raise ValueError("ORDERS_DEFAULT_PAGE_SIZE must not exceed ORDERS_MAX_PAGE_SIZE")
        return self
