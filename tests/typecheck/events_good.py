"""Must pass mypy --strict: a typical subscriber and publisher of generated event code."""

from __future__ import annotations

import keel.events
from kitchen.pantry.v1 import pantry_keel, pantry_pb2
from kitchen.v1 import kitchen_keel, kitchen_pb2
from sqlalchemy.ext.asyncio import AsyncSession


class Pantry(kitchen_keel.PantryServiceSubscriber):
    async def on_dish_cooked(
        self, event: kitchen_pb2.DishCooked, context: keel.events.EventContext
    ) -> None:
        print(event.dish.name, context.event_id, context.delivery)

    async def on_money_spent(
        self, event: pantry_pb2.MoneySpent, context: keel.events.EventContext
    ) -> None:
        print(event.amount.units, context.correlation_id)


def subscriber() -> keel.events.Subscriber:
    return Pantry()


async def publish(session: AsyncSession) -> list[str]:
    publisher = kitchen_keel.KitchenServicePublisher(session)
    cooked = await publisher.dish_cooked(kitchen_pb2.DishCooked(dish=kitchen_pb2.Dish(name="x")))
    burnt = await publisher.burnt(kitchen_pb2.Dish.Burnt(name="x"))
    return [cooked, burnt]


SPECS: tuple[keel.events.EventSpec, ...] = (kitchen_keel.DISH_COOKED, pantry_keel.MONEY_SPENT)
