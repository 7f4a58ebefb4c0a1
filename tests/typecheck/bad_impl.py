"""Must fail mypy --strict with exactly the errors in bad_impl.expected."""

from __future__ import annotations

import keel
from kitchen.v1 import kitchen_keel, kitchen_pb2


class Kitchen(kitchen_keel.KitchenServiceBase):
    async def cook(  # wrong response type
        self, request: kitchen_pb2.CookRequest, context: keel.Context
    ) -> kitchen_pb2.ChatResponse:
        return kitchen_pb2.ChatResponse()


async def use(client: kitchen_keel.KitchenServiceClient) -> None:
    await client.cook(kitchen_pb2.ChatRequest())  # wrong request type
    await client.cook(kitchen_pb2.CookRequest(), 5.0)  # timeout is keyword-only
    reply: kitchen_pb2.ChatResponse = await client.cook(kitchen_pb2.CookRequest())
    await client.follow(kitchen_pb2.FollowRequest())  # a stream is iterated, not awaited
    await client.import_(kitchen_pb2.ImportRequest(), deadline=3)  # no such keyword
    del reply
