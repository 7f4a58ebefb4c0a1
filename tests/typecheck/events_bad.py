"""Must fail mypy --strict at the lines in events_bad.expected: misuse of generated event code."""

from __future__ import annotations

import keel.events
from kitchen.v1 import kitchen_keel, kitchen_pb2
from sqlalchemy.ext.asyncio import AsyncSession


class Partial(kitchen_keel.PantryServiceSubscriber):
    async def on_dish_cooked(
        self, event: kitchen_pb2.DishCooked, context: keel.events.EventContext
    ) -> None:
        print(event.dish.name)


class Mistyped(kitchen_keel.KitchenServiceSubscriber):
    async def on_money_spent(
        self, event: kitchen_pb2.Dish, context: keel.events.EventContext
    ) -> None:
        print(event.name)


async def misuse(session: AsyncSession) -> None:
    Partial()
    publisher = kitchen_keel.KitchenServicePublisher(session)
    await publisher.dish_cooked(kitchen_pb2.Dish())
    event_id: int = await publisher.burnt(kitchen_pb2.Dish.Burnt())
    await publisher.money_spent(kitchen_pb2.Dish())
    print(event_id)
