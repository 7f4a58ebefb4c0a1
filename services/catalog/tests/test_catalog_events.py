"""The units-sold read model on the catalog's database (SQLite and PostgreSQL): the orders'
events, handled in the transaction the inbox would commit, show in the products as read."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import keel.events
import pytest
from acme.orders.v1 import orders_pb2
from catalog.domain import Catalog
from catalog.events import CatalogEvents
from catalog.store import SqlStore, seed
from keel.data import Database


@pytest.fixture
def store(keel_database: Database) -> SqlStore:
    return seed(SqlStore(keel_database))


async def _handle(
    db: Database, event: orders_pb2.OrderPlaced | orders_pb2.OrderCancelled, fail: bool = False
) -> None:
    """Handle `event` as the consumer does: in one transaction, through its session (which
    then fails, with `fail`)."""
    async with db.transaction() as session:
        context = keel.events.EventContext(
            event_id=keel.events.new_event_id(),
            subject="test",
            correlation_id="c",
            delivery=1,
            published_at=datetime.now(UTC),
            session=session,
        )
        if isinstance(event, orders_pb2.OrderPlaced):
            await CatalogEvents().on_order_placed(event, context)
        else:
            await CatalogEvents().on_order_cancelled(event, context)
        if fail:
            raise RuntimeError("the inbox transaction fails")


def _lines(*lines: tuple[str, int]) -> list[orders_pb2.OrderLine]:
    return [orders_pb2.OrderLine(product_id=p, quantity=q) for p, q in lines]


async def test_placed_orders_add_units_sold_and_cancelled_ones_take_them_away(
    store: SqlStore,
) -> None:
    catalog = Catalog(store)
    assert (await catalog.get("p_mug")).units_sold == 0
    await _handle(
        store.db,
        orders_pb2.OrderPlaced(order_id="o_1", lines=_lines(("p_mug", 2), ("p_kettle", 1))),
    )
    await _handle(store.db, orders_pb2.OrderPlaced(order_id="o_2", lines=_lines(("p_mug", 3))))
    await _handle(store.db, orders_pb2.OrderCancelled(order_id="o_1", lines=_lines(("p_mug", 2))))
    assert (await catalog.get("p_mug")).units_sold == 3
    products, _ = await catalog.page("", 10)
    assert {p.product_id: p.units_sold for p in products} == {
        "p_kettle": 1,
        "p_mug": 3,
        "p_teapot": 0,
    }
    assert (await catalog.update("p_mug", title="Big mug")).units_sold == 3
    assert (await catalog.get("p_mug")).stock == 200  # the read model never touches stock


async def test_concurrent_handlers_lose_no_units(store: SqlStore) -> None:
    await Catalog(store).get("p_mug")  # the seed first
    placed = [
        orders_pb2.OrderPlaced(order_id=f"o_{i}", lines=_lines(("p_mug", 1))) for i in range(20)
    ]
    await asyncio.gather(*(_handle(store.db, event) for event in placed))
    assert (await Catalog(store).get("p_mug")).units_sold == 20


async def test_a_rolled_back_handler_counts_nothing(store: SqlStore) -> None:
    placed = orders_pb2.OrderPlaced(order_id="o_1", lines=_lines(("p_mug", 5)))
    with pytest.raises(RuntimeError, match="the inbox transaction fails"):
        await _handle(store.db, placed, fail=True)
    assert (await Catalog(store).get("p_mug")).units_sold == 0
