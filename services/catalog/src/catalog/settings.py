"""The catalog's own settings, from `CATALOG_*` environment variables (pydantic-settings), read
once at start-up and handed to the rules as a catalog.model.Policy.

| variable | meaning | default |
| --- | --- | --- |
| CATALOG_CURRENCY | ISO 4217 code the shop sells in (new products, reservation totals) | EUR |
| CATALOG_DEFAULT_PAGE_SIZE | products on a ListProducts page when none is asked for | 50 |
| CATALOG_MAX_PAGE_SIZE | the most products on a page (at most 500, the proto's limit) | 500 |
| CATALOG_MAX_LINE_QUANTITY | the most units of one reservation line | 1000 |
| CATALOG_MAX_RESTOCK | the most units one RestockProduct adds | 100000 |

An unknown `CATALOG_` variable or an invalid value stops start-up with a message naming it.
"""

from __future__ import annotations

import os
from typing import Self

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from catalog.model import Policy

PREFIX = "CATALOG_"
PAGE_SIZE_LIMIT = 500
"""ListProductsRequest.page_size's limit in the proto."""


class CatalogSettings(BaseSettings):
    """The catalog's settings (see the module's table)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="forbid", frozen=True)

    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    default_page_size: int = Field(default=50, ge=1, le=PAGE_SIZE_LIMIT)
    max_page_size: int = Field(default=500, ge=1, le=PAGE_SIZE_LIMIT)
    max_line_quantity: int = Field(default=1000, ge=1)
    max_restock: int = Field(default=100_000, ge=1)

    @model_validator(mode="after")
    def _default_within_max(self) -> Self:
        if self.default_page_size > self.max_page_size:
            raise ValueError(f"{PREFIX}DEFAULT_PAGE_SIZE must not exceed {PREFIX}MAX_PAGE_SIZE")
        return self

    def policy(self) -> Policy:
        """The settings as the rules take them."""
        return Policy(
            currency=self.currency,
            default_page_size=self.default_page_size,
            max_page_size=self.max_page_size,
            max_line_quantity=self.max_line_quantity,
            max_restock=self.max_restock,
        )


class SettingsError(Exception):
    """A CATALOG_* variable is unknown or has an invalid value."""


def load() -> CatalogSettings:
    """The settings from the process's environment; SettingsError naming the variables that
    are unknown or invalid."""
    known = {PREFIX + name.upper() for name in CatalogSettings.model_fields}
    unknown = sorted(
        k for k in os.environ if k.upper().startswith(PREFIX) and k.upper() not in known
    )
    if unknown:
        raise SettingsError(
            f"unknown setting {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    try:
        return CatalogSettings()
    except ValidationError as error:
        problems = "; ".join(
            f"{PREFIX}{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"] else e["msg"]
            for e in error.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
