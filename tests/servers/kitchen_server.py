"""A Keel service over the golden kitchen protos, for tests that need a real server.

`python tests/servers/kitchen_server.py` serves it with `keel.serve` (settings from KEEL_*).
`Cook` sleeps for the request's `dish.cook_time`, so tests can hold calls in flight.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden" / "out"))

import keel
from google.protobuf import empty_pb2
from keel.runtime import correlation
from kitchen.v1 import kitchen_keel, kitchen_pb2

__all__ = ["Front", "Kitchen", "Pantry", "Photos", "kitchen_keel", "kitchen_pb2"]


class Kitchen(kitchen_keel.KitchenServiceBase):  # type: ignore[misc]
    """Cooks slowly, counts stock, and fails on request."""

    in_flight: ClassVar[int] = 0

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
        if request.dish.name == "in-flight":  # how many slow cooks are running now
            return kitchen_pb2.CookResponse(dish=kitchen_pb2.Dish(servings=Kitchen.in_flight))
        if request.dish.name == "whoami":
            return kitchen_pb2.CookResponse(dish=kitchen_pb2.Dish(name=str(os.getpid())))
        if request.dish.name == "busy":
            raise keel.errors.ResourceExhausted("the kitchen is full", retry_after=1.5)
        Kitchen.in_flight += 1
        try:
            await asyncio.sleep(request.dish.cook_time.ToTimedelta().total_seconds())
        finally:
            Kitchen.in_flight -= 1
        return kitchen_pb2.CookResponse(dish=request.dish)

    async def stock(
        self, requests: AsyncIterator[kitchen_pb2.StockRequest], context: keel.Context
    ) -> kitchen_pb2.StockResponse:
        return kitchen_pb2.StockResponse(total=sum([r.quantity async for r in requests]))


class Pantry(kitchen_keel.PantryServiceBase):  # type: ignore[misc]
    """Records what each call brought: deadline left and metadata."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def count(self, request: Any, context: keel.Context) -> Any:
        self.seen.append(
            {"remaining": context.time_remaining(), **dict(context.invocation_metadata() or ())}
        )
        return kitchen_pb2.CountResponse(count=len(self.seen))


class Front(kitchen_keel.KitchenServiceBase):  # type: ignore[misc]
    """Calls the pantry while handling Cook; fails on demand for retry tests."""

    def __init__(self, pantry_target: str = "") -> None:
        self.pantry_target = pantry_target
        self.attempts = 0
        self.failures: list[keel.errors.KeelError] = []
        self.correlation_ids: list[str] = []

    async def cook(self, request: Any, context: keel.Context) -> Any:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        if self.pantry_target:
            self.correlation_ids.append(correlation.current())
            target = None if self.pantry_target == "discover" else self.pantry_target
            async with kitchen_keel.PantryServiceClient.connect(target) as pantry:
                await pantry.count(kitchen_pb2.CountRequest())
        return kitchen_pb2.CookResponse(dish=request.dish)

    async def import_(self, request: Any, context: keel.Context) -> Any:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        return kitchen_pb2.ImportResponse(imported=self.attempts)

    async def connect_(self, request: Any, context: keel.Context) -> Any:
        return empty_pb2.Empty()


class Photos(kitchen_keel.PhotoServiceBase):  # type: ignore[misc]
    """Keeps one photo per dish, as google.api.HttpBody."""

    def __init__(self) -> None:
        self.photos: dict[str, Any] = {}

    async def put_photo(self, request: Any, context: keel.Context) -> Any:
        self.photos[request.name] = request.photo
        return kitchen_pb2.PutPhotoResponse(
            size=len(request.photo.data), content_type=request.photo.content_type
        )

    async def get_photo(self, request: Any, context: keel.Context) -> Any:
        if request.name not in self.photos:
            raise keel.errors.NotFound(f"no photo of {request.name}")
        return self.photos[request.name]


if __name__ == "__main__":
    keel.serve([Kitchen(), kitchen_keel.PantryServiceBase()])
