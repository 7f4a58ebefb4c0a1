"""The catalog's rules on its store, on SQLite and on PostgreSQL, and the same contract on the
in-memory store: ids, keyset pages stable under inserts, archived products left out of pages,
reservations that never oversell, seed data that survives restarts (databases only)."""

from __future__ import annotations

import asyncio
import itertools
import os
from datetime import UTC
from pathlib import Path

import pytest
import pytest_asyncio
from catalog.domain import (
    Catalog,
    ConflictError,
    OutOfStockError,
    Product,
    ProductState,
    Reservation,
    Store,
)
from catalog.memory import InMemoryStore
from catalog.store import SEED, SqlStore, seed
from keel.data import Database
from keel.testing.postgres import PostgresServer

MEMORY = "memory:"
_databases = itertools.count(1)


@pytest_asyncio.fixture(params=["sqlite", "postgresql", "memory"])
async def keel_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """keel.testing's database URLs (SQLite, PostgreSQL), and MEMORY: the in-memory store."""
    if request.param == "memory":
        return MEMORY
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.sqlite3'}"
    server: PostgresServer = request.getfixturevalue("keel_postgres")
    return await server.create_database(f"test_catalog_{os.getpid()}_{next(_databases)}")


@pytest.fixture
def store(keel_database_url: str, request: pytest.FixtureRequest) -> SqlStore | InMemoryStore:
    """The catalog's store on its migrated database (SQLite, PostgreSQL), or in memory."""
    if keel_database_url == MEMORY:
        return InMemoryStore()
    database: Database = request.getfixturevalue("keel_database")
    return SqlStore(database)


async def test_created_products_get_new_ids_and_read_back_equal(store: Store) -> None:
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
    store: Store,
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


async def test_reservations_are_idempotent_and_release_gives_stock_back(
    store: SqlStore | InMemoryStore,
) -> None:
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


async def test_concurrent_reservations_never_oversell(store: SqlStore | InMemoryStore) -> None:
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
    store: SqlStore | InMemoryStore,
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
    if keel_database_url == MEMORY:
        pytest.skip("the in-memory store does not outlive its process")
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


async def test_updates_change_only_what_they_name(store: SqlStore | InMemoryStore) -> None:
    catalog = Catalog(seed(store))
    updated = await catalog.update("p_mug", title="Big mug", labels={"colour": "red"})
    assert (updated.title, updated.price_cents, updated.stock) == ("Big mug", 899, 200)
    assert await catalog.get("p_mug") == updated


async def test_archived_products_keep_their_state_and_leave_pages(
    store: SqlStore | InMemoryStore,
) -> None:
    catalog = Catalog(seed(store))
    archived = await catalog.archive("p_mug")
    assert archived.state is ProductState.ARCHIVED
    assert await catalog.get("p_mug") == archived
    assert [p.product_id for p in (await catalog.page("", 10))[0]] == ["p_kettle", "p_teapot"]
    everything, _ = await catalog.page("", 10, archived=True)
    assert [(p.product_id, p.state) for p in everything] == [
        ("p_kettle", ProductState.ACTIVE),
        ("p_mug", ProductState.ARCHIVED),
        ("p_teapot", ProductState.ACTIVE),
    ]
    # A page of active products is full even when archived ones lie between them.
    page, last = await catalog.page("", 2)
    assert ([p.product_id for p in page], last) == (["p_kettle", "p_teapot"], None)
    restocked = await catalog.restock("p_teapot", 5)
    assert (await catalog.get("p_teapot")) == restocked
    assert restocked.stock == 15
