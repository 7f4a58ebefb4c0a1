"""keel.data.Database: the service's database from settings, transactions, SQLite shared by
worker processes, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
from pathlib import Path

import pytest
from keel.data import Database, DataError
from keel.runtime.config import Settings
from sqlalchemy import Integer, String, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Counter(Base):
    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


def test_the_default_is_a_sqlite_file_in_the_services_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = Database.for_service("catalog", Settings())
    assert db.dialect == "sqlite"
    assert Path(db.url.database or "") == tmp_path / ".keel/state/catalog/catalog.sqlite3"
    assert (tmp_path / ".keel/state/catalog").is_dir()
    assert (tmp_path / ".keel/.gitignore").read_text().splitlines()[-1] == "*"
    chosen = Database.for_service("catalog", Settings(state_dir=str(tmp_path / "elsewhere")))
    assert Path(chosen.url.database or "") == tmp_path / "elsewhere/catalog.sqlite3"
    url = "postgresql+asyncpg://catalog:secret@db:5432/catalog"
    given = Database.for_service("catalog", Settings(database_url=url))
    assert (given.dialect, given.url.database) == ("postgresql", "catalog")
    assert "secret" not in repr(given)


async def test_a_transaction_commits_at_the_end_and_rolls_back_on_error(
    keel_database_url: str,
) -> None:
    db = Database(keel_database_url)
    try:
        async with db.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        async with db.transaction() as session:
            session.add(Counter(name="kept", value=1))

        async def fail() -> None:
            async with db.transaction() as session:
                session.add(Counter(name="undone", value=1))
                await session.flush()
                raise RuntimeError("the handler failed")

        with pytest.raises(RuntimeError):
            await fail()
        async with db.transaction() as session:
            names = list(await session.scalars(select(Counter.name)))
        assert names == ["kept"]
    finally:
        await db.dispose()


@pytest.mark.parametrize("inline", ["all", "off"])
async def test_sqlite_runs_in_wal_mode_with_foreign_keys_on(tmp_path: Path, inline: str) -> None:
    """Calls inline: no busy timeout in SQLite (busy waits are asynchronous, see
    test_data_inline), no automatic checkpoint; on aiosqlite's thread: SQLite's busy handler."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/x.sqlite3?keel_inline={inline}")
    try:
        async with db.transaction() as session:
            mode = await session.scalar(text("PRAGMA journal_mode"))
            keys = await session.scalar(text("PRAGMA foreign_keys"))
            busy = await session.scalar(text("PRAGMA busy_timeout"))
            checkpoints = await session.scalar(text("PRAGMA wal_autocheckpoint"))
        assert (mode, keys) == ("wal", 1)
        assert (busy, checkpoints) == ((0, 0) if inline == "all" else (30_000, 1000))
    finally:
        await db.dispose()


async def test_a_temporary_database_has_its_tables_and_is_removed() -> None:
    db = Database.temporary(Base.metadata)
    folder = Path(db.url.database or "").parent
    async with db.transaction() as session:
        session.add(Counter(name="n", value=1))
    assert folder.is_dir()
    await db.dispose()
    assert not folder.exists()


def _increment(db: Database, times: int) -> None:
    """A worker: read-modify-write the counter `times` times, one transaction each."""

    async def work() -> None:
        for _ in range(times):
            async with db.transaction() as session:
                row = await session.get(Counter, "n")
                assert row is not None
                row.value += 1
        await db.dispose()

    asyncio.run(work())


def test_forked_workers_share_a_sqlite_file_without_losing_a_write(tmp_path: Path) -> None:
    """As KEEL_WORKERS runs them: the Database is made before the fork, each worker gets its
    own connections, and concurrent read-modify-write transactions queue for the write lock
    instead of failing ("database is locked") or overwriting each other."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/shared.sqlite3")

    async def setup() -> None:
        async with db.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        async with db.transaction() as session:
            session.add(Counter(name="n", value=0))
        await db.dispose()

    asyncio.run(setup())
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_increment, args=(db, 150)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0]

    async def total() -> int | None:
        async with db.transaction() as session:
            value = await session.scalar(select(Counter.value))
        await db.dispose()
        return value

    assert asyncio.run(total()) == 450


async def test_a_read_only_transaction_runs_beside_a_writer(keel_database_url: str) -> None:
    """SQLite: a reader does not wait for the write lock another transaction holds (it sees
    the last commit); PostgreSQL: a read-only transaction refuses writes. A pooled connection
    does not stay read-only."""
    db = Database(keel_database_url)
    try:
        async with db.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        async with db.transaction() as session:
            session.add(Counter(name="n", value=1))
        async with db.transaction() as writing:
            row = await writing.get(Counter, "n")
            assert row is not None
            row.value = 2
            await writing.flush()  # holds the write lock (SQLite) and the row (PostgreSQL)
            async with db.transaction(readonly=True) as reading:
                assert await reading.scalar(select(Counter.value)) == 1
        if db.dialect == "postgresql":
            with pytest.raises(Exception, match="read-only transaction"):
                async with db.transaction(readonly=True) as reading:
                    reading.add(Counter(name="m", value=1))
        for _ in range(3):  # whichever pooled connection comes: writable again
            async with db.transaction() as session:
                row = await session.get(Counter, "n")
                assert row is not None
                row.value += 1
        async with db.transaction(readonly=True) as reading:
            assert await reading.scalar(select(Counter.value)) == 5
    finally:
        await db.dispose()


async def test_sqlite_write_transactions_of_one_database_take_turns(tmp_path: Path) -> None:
    """A second writer waits before it begins (not in SQLite's busy handler, holding a
    connection) until the first commits; a reader runs meanwhile; a write transaction inside
    another of the same task raises instead of waiting for itself."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/x.sqlite3", tables=Base.metadata)
    first_wrote, release = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        async with db.transaction() as session:
            session.add(Counter(name="n", value=1))
            await session.flush()
            first_wrote.set()
            await release.wait()
            order.append("first committing")

    async def second() -> None:
        await first_wrote.wait()
        async with db.transaction() as session:
            order.append("second began")
            row = await session.get(Counter, "n")
            assert row is not None
            row.value += 1

    async def reader() -> None:
        await first_wrote.wait()
        async with db.transaction(readonly=True) as session:
            order.append(f"read {await session.scalar(select(Counter.value))}")
        release.set()

    try:
        await asyncio.gather(first(), second(), reader())
        assert order == ["read None", "first committing", "second began"]
        async with db.transaction(readonly=True) as session:
            assert await session.scalar(select(Counter.value)) == 2
        with pytest.raises(DataError, match="inside another"):
            async with db.transaction(), db.transaction():
                pass
        async with db.transaction() as session:  # the lock was released
            assert await session.scalar(select(Counter.value)) == 2
    finally:
        await db.dispose()


async def test_a_sqlite_connection_returned_in_a_transaction_is_rolled_back(
    tmp_path: Path,
) -> None:
    """A pooled SQLite connection is rolled back on return only when a transaction is still
    open; what it wrote is undone and the next transaction on it begins normally."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/x.sqlite3", tables=Base.metadata)
    try:
        async with db.transaction() as session:
            session.add(Counter(name="kept", value=1))
        async with db.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            for sql in ("BEGIN IMMEDIATE", "INSERT INTO counters (name, value) VALUES ('left', 1)"):
                done = driver.execute(sql)  # sqlite3 (calls inline) or aiosqlite
                if inspect.isawaitable(done):
                    await done
            assert driver.in_transaction
        for _ in range(3):  # whichever pooled connection comes
            async with db.transaction() as session:
                names = list(await session.scalars(select(Counter.name)))
                assert names == ["kept"]
    finally:
        await db.dispose()
