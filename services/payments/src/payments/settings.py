"""Payments' own settings, from `PAYMENTS_*` environment variables (read once at start-up).

| variable | meaning | default |
| --- | --- | --- |
| PAYMENTS_CURRENCIES | currencies accepted, comma-separated (others are declined) | EUR,USD |
| PAYMENTS_MAX_AMOUNT_CENTS | the most one payment may be for (more is declined) | 1000000 |
| PAYMENTS_DECLINE_PREFIX | card tokens starting with it are declined | tok_decline |
| PAYMENTS_UNAVAILABLE_PREFIX | card tokens starting with it get no answer | tok_unavailable |
| PAYMENTS_RETRY_AFTER | seconds a caller is told to wait when the network does not answer | 0.2 |

An invalid value stops start-up with a message naming the variable.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class PaymentsSettings(BaseSettings):
    """What payments accepts, and how its simulated card network answers."""

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", frozen=True)

    currencies: Annotated[frozenset[str], NoDecode] = frozenset({"EUR", "USD"})
    """ISO 4217 codes accepted; an authorization in another currency is declined."""
    max_amount_cents: int = Field(default=1_000_000, gt=0)
    """The largest amount one payment may be for; a larger authorization is declined."""
    decline_prefix: str = Field(default="tok_decline", min_length=1)
    """Card tokens the (simulated) card network declines start with it."""
    unavailable_prefix: str = Field(default="tok_unavailable", min_length=1)
    """Card tokens for which the (simulated) card network does not answer start with it."""
    retry_after: float = Field(default=0.2, gt=0, le=60)
    """Seconds an UNAVAILABLE authorization tells its caller to wait (RetryInfo: generated
    clients retry AuthorizePayment after it, with the same idempotency key)."""

    @field_validator("currencies", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        """`EUR,usd` from the environment: upper-case codes; each must be three letters."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        codes = frozenset(str(code).upper() for code in value)
        if not codes or any(len(code) != 3 or not code.isalpha() for code in codes):
            raise ValueError(
                "must be three-letter currency codes separated by commas, e.g. EUR,USD"
            )
        return codes
