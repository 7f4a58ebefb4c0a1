"""The catalog's store on a new database, migrated with the catalog's own migrations: once on
SQLite and once on PostgreSQL (keel_database_url is parametrized)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from catalog.store import SqlStore
from keel.data import Database, ServiceFolder, upgrade

SERVICE = ServiceFolder.at(Path(__file__).resolve().parent.parent)


@pytest_asyncio.fixture
async def store(keel_database_url: str) -> AsyncIterator[SqlStore]:
    db = Database(keel_database_url)
    await upgrade(db, SERVICE)
    store = SqlStore(db)
    yield store
    await store.close()
