"""A Keel service over the golden kitchen protos, for tests that need a real server.

`python tests/servers/kitchen_server.py` serves it with `keel.serve` (settings from KEEL_*).
`Cook` sleeps for the request's `dish.cook_time`, so tests can hold calls in flight.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden" / "out"))

import keel
from kitchen.v1 import kitchen_keel, kitchen_pb2

__all__ = ["Kitchen", "kitchen_keel", "kitchen_pb2"]


class Kitchen(kitchen_keel.KitchenServiceBase):  # type: ignore[misc]
    """Cooks slowly, counts stock, and fails on request."""

    async def cook(
        self, request: kitchen_pb2.CookRequest, context: keel.Context
    ) -> kitchen_pb2.CookResponse:
        if request.dish.name == "explode":
            raise RuntimeError("the oven is on fire: secret-internal-detail")
        if request.dish.name == "invalid":
            raise keel.errors.InvalidArgument(
                "the dish is not cookable",
                field_violations={"dish.name": "must not be 'invalid'"},
                reason="NOT_COOKABLE",
                domain="kitchen.example",
                metadata={"dish": "invalid"},
            )
        if request.dish.name == "busy":
            raise keel.errors.ResourceExhausted("the kitchen is full", retry_after=1.5)
        await asyncio.sleep(request.dish.cook_time.ToTimedelta().total_seconds())
        return kitchen_pb2.CookResponse(dish=request.dish)

    async def stock(
        self, requests: AsyncIterator[kitchen_pb2.StockRequest], context: keel.Context
    ) -> kitchen_pb2.StockResponse:
        return kitchen_pb2.StockResponse(total=sum([r.quantity async for r in requests]))


if __name__ == "__main__":
    keel.serve([Kitchen(), kitchen_keel.PantryServiceBase()])
