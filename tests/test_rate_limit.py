"""The gateway's rate limiter: a token bucket per client and route, in bounded memory.

A clock the test moves by hand stands in for time.monotonic, so nothing waits or times.
"""

from __future__ import annotations

from keel.gateway.edge import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refused_then_one_token_a_period() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.allow("203.0.113.7", "GET /v1/items") for _ in range(5)] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert limiter.retry_after == 1
    clock.now += 0.5  # one token at 2 a second
    assert limiter.allow("203.0.113.7", "GET /v1/items")
    assert not limiter.allow("203.0.113.7", "GET /v1/items")


def test_each_client_and_route_has_its_own_bucket() -> None:
    limiter = RateLimiter(1.0, 1, clock=Clock())
    assert limiter.allow("a", "GET /x")
    assert not limiter.allow("a", "GET /x")
    assert limiter.allow("b", "GET /x")
    assert limiter.allow("a", "POST /x")
    assert limiter.retry_after == 1
    assert RateLimiter(0.25, 1).retry_after == 4


def test_many_clients_keep_the_bucket_count_under_the_bound() -> None:
    limiter = RateLimiter(1.0, 5, clock=Clock())  # the clock stands still: nothing refills
    most = 0
    for client in range(100_000):
        assert limiter.allow(f"198.51.100.{client}", "GET /v1/items")  # a new client: a full bucket
        most = max(most, limiter.held)
    assert most == RateLimiter.MAX_BUCKETS < 100_000


def test_a_smaller_bound_is_kept_and_the_least_recent_clients_go_first() -> None:
    limiter = RateLimiter(1.0, 2, max_buckets=100, clock=Clock())
    assert limiter.allow("busy", "GET /x")
    assert limiter.allow("busy", "GET /x")
    assert not limiter.allow("busy", "GET /x")
    for client in range(98):  # room for all of them and busy's bucket
        limiter.allow(f"c{client}", "GET /x")
        assert not limiter.allow("busy", "GET /x")  # still empty, still refused
    for client in range(1_000):
        limiter.allow(f"d{client}", "GET /x")
        assert limiter.held <= 100
    assert limiter.held == 100


def test_buckets_full_again_are_dropped() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 4, clock=clock)  # an empty bucket is full after 2 s
    for client in range(1_000):
        limiter.allow(f"c{client}", "GET /x")
    assert limiter.held == 1_000
    limiter.allow("limited", "GET /x")
    while limiter.allow("limited", "GET /x"):
        pass
    clock.now = 1001.5
    limiter.allow("newcomer", "GET /x")
    assert limiter.held == 1_002  # not yet full: kept
    clock.now = 1002.0
    limiter.allow("another", "GET /x")
    # The first thousand are full again and gone; "limited" refilled too, "newcomer" did not.
    assert limiter.held == 2
    assert limiter.allow("newcomer", "GET /x")
    assert limiter.held == 2
