"""Edge policy besides auth: rate limiting (token bucket per client and route) and CORS."""

from __future__ import annotations

import math
from collections.abc import Iterable

import token_bucket


class RateLimiter:
    """A token bucket per (client identity, route): `rate` requests a second, `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self._limiter = token_bucket.Limiter(rate, max(burst, 1), token_bucket.MemoryStorage())

    def allow(self, identity: str, route: str) -> bool:
        """Take a token for this request; False when the bucket is empty."""
        return self._limiter.consume(f"{identity}\\x00{route}")

    @property
    def retry_after(self) -> int:
        """Seconds until a token is back (the `Retry-After` header)."""
        return max(1, math.ceil(1 / self.rate))


class Cors:
    """CORS for the configured origins (`*` for any)."""

    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = {o.strip() for o in origins if o.strip()}

    def allowed(self, origin: str | None) -> str | None:
        """The `Access-Control-Allow-Origin` value for `origin`, or None."""
        if not origin or not self.origins:
            return None
        if "*" in self.origins:
            return "*"
        return origin if origin in self.origins else None

    def preflight(
        self, origin: str, methods: Iterable[str], requested_headers: str
    ) -> list[tuple[bytes, bytes]]:
        """Headers of a successful preflight answer."""
        headers = [
            (b"access-control-allow-origin", origin.encode()),
            (b"access-control-allow-methods", ", ".join(sorted(methods)).encode()),
            (b"access-control-max-age", b"600"),
            (b"vary", b"origin"),
        ]
        if requested_headers:
            headers.append((b"access-control-allow-headers", requested_headers.encode()))
        return headers
