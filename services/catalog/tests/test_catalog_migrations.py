"""The catalog's migrations on a database that holds data (SQLite and PostgreSQL): products
already there become ACTIVE, reservations referencing them stay, and the step back works."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from catalog.domain import Catalog, ProductState
from catalog.store import SqlStore
from keel.data import Database, ServiceFolder, upgrade
from keel.data.migrations import downgrade
from sqlalchemy import DateTime, bindparam, text

FOLDER = ServiceFolder.at(Path(__file__).parents[1])
BEFORE_STATE = "4f56736e0818"  # released orders: the revision before products.state


async def test_products_of_an_earlier_revision_become_active(keel_database_url: str) -> None:
    db = Database(keel_database_url)
    try:
        await upgrade(db, FOLDER, BEFORE_STATE)
        created = bindparam("t", datetime(2026, 1, 1, tzinfo=UTC), DateTime(timezone=True))
        product = "INSERT INTO products VALUES ('p_old', 'Old', 100, 'EUR', 4, '{}', :t)"
        async with db.transaction() as session:
            await session.execute(text(product).bindparams(created))
            await session.execute(text("INSERT INTO reservations VALUES ('o_old', 100, 'EUR')"))
            await session.execute(
                text("INSERT INTO reservation_lines VALUES ('o_old', 0, 'p_old', 1)")
            )
        await upgrade(db, FOLDER)
        catalog = Catalog(SqlStore(db))
        old = await catalog.get("p_old")
        assert (old.state, old.stock) == (ProductState.ACTIVE, 4)
        await catalog.release("o_old")  # the reservation made before is still there
        assert (await catalog.get("p_old")).stock == 5
        assert await downgrade(db, FOLDER, BEFORE_STATE) == BEFORE_STATE
        assert await upgrade(db, FOLDER) != BEFORE_STATE
        assert (await catalog.get("p_old")).state is ProductState.ACTIVE
    finally:
        await db.dispose()
