"""Must pass mypy --strict: a typical implementation and use of generated code."""

from __future__ import annotations

from collections.abc import AsyncIterator

import keel
from google.protobuf import empty_pb2
from kitchen.v1 import kitchen_keel, kitchen_pb2


class Kitchen(kitchen_keel.KitchenServiceBase):
    async def cook(
        self, request: kitchen_pb2.CookRequest, context: keel.Context
    ) -> kitchen_pb2.CookResponse:
        return kitchen_pb2.CookResponse(dish=request.dish)

    async def follow(
        self, request: kitchen_pb2.FollowRequest, context: keel.Context
    ) -> AsyncIterator[kitchen_pb2.FollowResponse]:
        for number in range(request.steps):
            yield kitchen_pb2.FollowResponse(step=kitchen_pb2.Dish.Step(number=number))

    async def stock(
        self, requests: AsyncIterator[kitchen_pb2.StockRequest], context: keel.Context
    ) -> kitchen_pb2.StockResponse:
        return kitchen_pb2.StockResponse(total=sum([r.quantity async for r in requests]))

    async def connect_(self, request: empty_pb2.Empty, context: keel.Context) -> empty_pb2.Empty:
        return empty_pb2.Empty()


async def use(client: kitchen_keel.KitchenServiceClient) -> int:
    cooked: kitchen_pb2.CookResponse = await client.cook(
        kitchen_pb2.CookRequest(), timeout=1.0, metadata=[("x-request-id", "r1")]
    )
    steps = [r.step.number async for r in client.follow(kitchen_pb2.FollowRequest(steps=2))]

    async def items() -> AsyncIterator[kitchen_pb2.StockRequest]:
        yield kitchen_pb2.StockRequest(quantity=1)

    total = await client.stock(items())
    imported = await client.import_(kitchen_pb2.ImportRequest())
    return len(cooked.dish.name) + sum(steps) + total.total + imported.imported
