"""Circuit breaking per target (purgatory): fail fast while a target keeps failing.

A circuit counts UNAVAILABLE and DEADLINE_EXCEEDED outcomes in a row; at the threshold it opens
and calls fail at once with UNAVAILABLE; after the reset period one call probes (half-open);
its success closes the circuit, its failure opens it again. Other outcomes count as success.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import grpc.aio
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

FAILURES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def _not_a_failure(error: BaseException) -> bool:
    return not (isinstance(error, grpc.aio.AioRpcError) and error.code() in FAILURES)


class Breakers:
    """The circuits of one process, one per target name."""

    def __init__(self) -> None:
        self._factory = AsyncCircuitBreakerFactory(exclude=[(BaseException, _not_a_failure)])

    @asynccontextmanager
    async def guard(self, target: str, threshold: int, reset: float) -> AsyncIterator[None]:
        """Run the block under `target`'s circuit; raise UNAVAILABLE at once if it is open."""
        breaker = await self._factory.get_breaker(target, threshold=threshold, ttl=reset)
        try:
            async with breaker:
                yield
        except OpenedState:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details=f"circuit open for {target}: too many recent failures",
            ) from None

    async def state(self, target: str) -> str:
        """ "closed", "opened" or "half-opened" (for tests and diagnostics)."""
        breaker = await self._factory.get_breaker(target)
        return str(breaker.context.state)


BREAKERS = Breakers()
