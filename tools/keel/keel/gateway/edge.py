"""Edge policy besides auth: rate limiting (token bucket per client and route) and CORS."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import token_bucket


class _Buckets(token_bucket.StorageBase):
    """token_bucket's MemoryStorage, bounded: buckets in least recently used order, a bucket
    that has refilled completely (as good as none) dropped, never more than `limit` of them.

    Room is made when a new bucket comes: the oldest buckets go while they are full again, or
    while there are `limit` of them (under a flood of more clients than that, the least
    recently seen lose their state and start again from a full bucket).
    """

    def __init__(self, limit: int, full_after: float, clock: Callable[[], float]) -> None:
        self.limit = max(limit, 1)
        self.full_after = full_after
        self._clock = clock
        self._buckets: OrderedDict[str | bytes, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def get_token_count(self, key: str | bytes) -> float:
        bucket = self._buckets.get(key)
        return bucket[0] if bucket is not None else 0

    def replenish(self, key: str | bytes, rate: float, capacity: int) -> None:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(now)
            self._buckets[key] = [capacity, now]
            return
        self._buckets.move_to_end(key)
        tokens, last = bucket
        if now > last:
            bucket[:] = [min(capacity, tokens + rate * (now - last)), now]

    def consume(self, key: str | bytes, num_tokens: int) -> bool:
        bucket = self._buckets[key]
        if bucket[0] < num_tokens:
            return False
        bucket[0] -= num_tokens
        return True

    def _make_room(self, now: float) -> None:
        buckets = self._buckets
        while buckets:
            _, last = next(iter(buckets.values()))
            if len(buckets) < self.limit and now - last < self.full_after:
                return
            buckets.popitem(last=False)


class RateLimiter:
    """A token bucket per (client identity, route): `rate` requests a second, `burst` at once.

    At most `max_buckets` buckets are kept (about 280 bytes each); a bucket unused long enough
    to be full again is dropped, since a client without one starts from a full bucket anyway.
    """

    MAX_BUCKETS = 50_000

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_buckets: int = MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        capacity = max(burst, 1)
        self._buckets = _Buckets(max_buckets, capacity / rate, clock)
        self._limiter = token_bucket.Limiter(rate, capacity, self._buckets)

    def allow(self, identity: str, route: str) -> bool:
        """Take a token for this request; False when the bucket is empty."""
        return self._limiter.consume(f"{identity}\x00{route}")

    @property
    def retry_after(self) -> int:
        """Seconds until a token is back (the `Retry-After` header)."""
        return max(1, math.ceil(1 / self.rate))

    @property
    def held(self) -> int:
        """How many buckets are kept now (at most `max_buckets`)."""
        return len(self._buckets)


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
