"""The catalog's rules on its store, on SQLite and on PostgreSQL: ids, keyset pages stable
under inserts, reservations that never oversell, seed data that survives restarts."""

from __future__ import annotations

import asyncio
from datetime import UTC

import pytest
from catalog.domain import Catalog, ConflictError, OutOfStockError, Product, Reservation
from catalog.store import SEED, SqlStore, seed
from keel.data import Database


@pytest.fixture
def store(keel_database: Database) -> SqlStore:
    """The catalog's store on its migrated database (SQLite, then PostgreSQL)."""
    return SqlStore(keel_database)


async def test_created_products_get_new_ids_and_read_back_equal(store: SqlStore) -> None:
    catalog = Catalog(store)
    made = await catalog.create("Spoon", 199, "EUR", stock=3, labels={"size": "small"})
    other = await catalog.create("Fork", 199, "EUR")
    assert made.product_id.startswith("p_")
    assert made.product_id < other.product_id  # made first, sorts first
    read = await catalog.get(made.product_id)
    assert read == made
    assert read.created.tzinfo is not None
    assert read.created.astimezone(UTC) == made.created.astimezone(UTC)


async def test_pages_neither_repeat_nor_skip_rows_when_others_are_inserted(
    store: SqlStore,
) -> None:
    catalog = Catalog(store)
    originals = [(await catalog.create(f"P{i}", 100, "EUR")).product_id for i in range(7)]
    seen: list[str] = []
    products, last = await catalog.page("", 3)
    seen += [p.product_id for p in products]
    assert last == seen[-1]
    async with store.transaction() as tx:  # one before the cursor, one after everything
        await tx.add(Product("p_0", "Early", 1, "EUR"))
    await catalog.create("Late", 1, "EUR")
    while last is not None:
        products, last = await catalog.page(last, 3)
        seen += [p.product_id for p in products]
    assert len(seen) == len(set(seen))
    assert [s for s in seen if s in originals] == originals
    assert "p_0" not in seen  # inserted before the cursor: not on a later page
    assert len(seen) == 8  # the late one is


async def test_reservations_are_idempotent_and_release_gives_stock_back(store: SqlStore) -> None:
    catalog = Catalog(seed(store))
    first = await catalog.reserve("o_1", [("p_teapot", 4), ("p_mug", 1), ("p_teapot", 1)])
    assert first == Reservation(
        "o_1", (("p_teapot", 4), ("p_mug", 1), ("p_teapot", 1)), 5 * 3499 + 899, "EUR"
    )
    assert await catalog.reserve("o_1", [("p_teapot", 4)]) == first
    assert (await catalog.get("p_teapot")).stock == 5
    with pytest.raises(OutOfStockError) as caught:
        await catalog.reserve("o_2", [("p_mug", 1), ("p_teapot", 6)])
    assert caught.value.shortages == {"p_teapot": (6, 5)}
    assert (await catalog.get("p_mug")).stock == 199  # nothing of o_2 was taken
    await catalog.release("o_1")
    await catalog.release("o_1")
    assert ((await catalog.get("p_teapot")).stock, (await catalog.get("p_mug")).stock) == (10, 200)


async def test_concurrent_reservations_never_oversell(store: SqlStore) -> None:
    catalog = Catalog(seed(store))
    outcomes = await asyncio.gather(
        *(catalog.reserve(f"o_{i}", [("p_teapot", 1)]) for i in range(16)),
        return_exceptions=True,
    )
    reserved = [o for o in outcomes if isinstance(o, Reservation)]
    refused = [o for o in outcomes if isinstance(o, OutOfStockError)]
    assert (len(reserved), len(refused)) == (10, 6), outcomes
    assert (await catalog.get("p_teapot")).stock == 0


async def test_one_order_reserved_by_concurrent_calls_takes_its_stock_once(
    store: SqlStore,
) -> None:
    catalog = Catalog(seed(store))
    outcomes = await asyncio.gather(
        *(catalog.reserve("o_same", [("p_kettle", 2)]) for _ in range(6)),
        return_exceptions=True,
    )
    assert all(isinstance(o, Reservation | ConflictError) for o in outcomes), outcomes
    assert any(isinstance(o, Reservation) for o in outcomes)
    assert (await catalog.get("p_kettle")).stock == 23


async def test_seed_products_are_added_once_and_survive_a_restart(
    store: SqlStore, keel_database_url: str
) -> None:
    catalog = Catalog(seed(store))
    await catalog.reserve("o_1", [("p_mug", 5)])
    await store.close()
    again = SqlStore(Database(keel_database_url))  # the service started again, seeding again
    try:
        restarted = Catalog(seed(again))
        assert (await restarted.get("p_mug")).stock == 195  # not reset to the seed's 200
        products, _ = await restarted.page("", 10)
        assert [p.product_id for p in products] == sorted(p.product_id for p in SEED)
        assert await restarted.reserve("o_1", [("p_mug", 5)]) == await catalog.reserve(
            "o_1", [("p_mug", 5)]
        )
    finally:
        await again.close()


async def test_updates_change_only_what_they_name(store: SqlStore) -> None:
    catalog = Catalog(seed(store))
    updated = await catalog.update("p_mug", title="Big mug", labels={"colour": "red"})
    assert (updated.title, updated.price_cents, updated.stock) == ("Big mug", 899, 200)
    assert await catalog.get("p_mug") == updated
