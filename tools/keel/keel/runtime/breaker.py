"""Circuit breaking per target (purgatory): fail fast while a target keeps failing.

A circuit counts UNAVAILABLE and DEADLINE_EXCEEDED outcomes in a row; at the threshold it opens
and calls fail at once with UNAVAILABLE; after the reset period one call probes (half-open);
its success closes the circuit, its failure opens it again. Other outcomes count as success.
"""

from __future__ import annotations

import grpc
import grpc.aio
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import CLOSED, OpenedState

__all__ = ["BREAKERS", "CLOSED", "Breakers", "counting", "enter", "opened"]
from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker

FAILURES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def _not_a_failure(error: BaseException) -> bool:
    return not (isinstance(error, grpc.aio.AioRpcError) and error.code() in FAILURES)


def opened(target: str) -> grpc.aio.AioRpcError:
    """The error of a call refused because `target`'s circuit is open."""
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details=f"circuit open for {target}: too many recent failures",
    )


class Breakers:
    """The circuits of one process, one per target name."""

    def __init__(self) -> None:
        self._factory = AsyncCircuitBreakerFactory(exclude=[(BaseException, _not_a_failure)])

    async def breaker(self, target: str, threshold: int, reset: float) -> AsyncCircuitBreaker:
        """`target`'s circuit, to enter around each call (`async with`); entering an open one
        raises OpenedState (see `opened`)."""
        return await self._factory.get_breaker(target, threshold=threshold, ttl=reset)

    async def state(self, target: str) -> str:
        """ "closed", "opened" or "half-opened" (for tests and diagnostics)."""
        breaker = await self._factory.get_breaker(target)
        return str(breaker.context.state)


BREAKERS = Breakers()


async def enter(breaker: AsyncCircuitBreaker, target: str) -> None:
    """Enter `target`'s circuit before a call: UNAVAILABLE at once if it is open. (A closed
    circuit has nothing to do on entry: callers may skip this when its state is CLOSED.)"""
    try:
        await breaker.__aenter__()
    except OpenedState:
        raise opened(target) from None


def counting(breaker: AsyncCircuitBreaker) -> bool:
    """Whether a success means something to the circuit (it is not closed, or it has counted
    failures that a success resets); when not, telling it (`__aexit__`) may be skipped."""
    context = breaker.context
    return context.state != CLOSED or bool(context.failure_count)
