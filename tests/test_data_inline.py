"""keel.data on SQLite with its calls inline on the event loop's thread (keel.data.inline, the
default): busy waits that leave the loop running, checkpoints on a worker thread, results read
before the transaction ends, the Core API, and the `keel_inline` modes."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from keel.data import Database, DataError, database
from sqlalchemy import Integer, String, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Counter(Base):
    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


def _locked(path: Path) -> sqlite3.Connection:
    """Another connection (as another process's would) holding SQLite's write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO counters (name, value) VALUES ('other', 1)")
    return other


async def test_a_writer_waits_for_another_connections_lock_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    """While another connection holds the write lock, a write transaction waits in
    asynchronous sleeps: other tasks run meanwhile; it begins once the lock is released."""
    path = tmp_path / "x.sqlite3"
    db = Database(f"sqlite+aiosqlite:///{path}", tables=Base.metadata)
    try:
        async with db.transaction() as session:
            session.add(Counter(name="n", value=1))
        other = _locked(path)

        async def write() -> None:
            async with db.transaction() as session:
                row = await session.get(Counter, "n")
                assert row is not None
                row.value += 1

        writer = asyncio.create_task(write())
        ticks = 0
        while ticks < 20:  # the loop keeps running while the writer waits for the lock
            await asyncio.sleep(0.005)
            ticks += 1
            assert not writer.done()
        other.execute("COMMIT")
        other.close()
        await asyncio.wait_for(writer, 30)
        async with db.transaction(readonly=True) as session:
            rows = dict((await session.execute(select(Counter.name, Counter.value))).all())
        assert rows == {"n": 2, "other": 1}
    finally:
        await db.dispose()


async def test_a_writer_gives_up_after_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As SQLite's busy handler would: "database is locked" once the busy timeout passed; the
    Database stays usable."""
    monkeypatch.setattr(database, "BUSY_TIMEOUT_SECONDS", 0.1)
    path = tmp_path / "x.sqlite3"
    db = Database(f"sqlite+aiosqlite:///{path}", tables=Base.metadata)
    try:
        async with db.transaction():
            pass
        other = _locked(path)
        with pytest.raises(OperationalError, match="locked"):
            async with db.transaction() as session:
                session.add(Counter(name="n", value=1))
        other.execute("ROLLBACK")
        other.close()
        async with db.transaction() as session:
            session.add(Counter(name="n", value=1))
        async with db.transaction(readonly=True) as session:
            assert await session.scalar(select(Counter.value)) == 1
    finally:
        await db.dispose()


async def test_checkpoints_run_on_a_worker_thread_every_so_many_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No automatic checkpoint on the connections (the WAL holds the commits); after
    CHECKPOINT_EVERY write transactions one runs on a thread and the database file has them."""
    monkeypatch.setattr(database, "CHECKPOINT_EVERY", 5)
    path = tmp_path / "x.sqlite3"
    db = Database(f"sqlite+aiosqlite:///{path}", tables=Base.metadata)

    def in_the_file() -> int:
        """Rows in the database file itself (immutable: the WAL is not read)."""
        with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as reader:
            tables = reader.execute("SELECT count(*) FROM sqlite_master WHERE name='counters'")
            if tables.fetchone()[0] == 0:
                return 0
            count: int = reader.execute("SELECT count(*) FROM counters").fetchone()[0]
        reader.close()
        return count

    try:
        for number in range(4):  # the first transaction created the tables
            async with db.transaction() as session:
                session.add(Counter(name=f"n{number}", value=number))
        assert in_the_file() == 0
        async with db.transaction() as session:
            session.add(Counter(name="n4", value=4))
        assert db._checkpoint is not None
        await db._checkpoint
        assert in_the_file() == 5
    finally:
        await db.dispose()


@pytest.mark.parametrize("inline", ["all", "writes", "off"])
async def test_every_mode_reads_writes_and_serves_the_core_api(tmp_path: Path, inline: str) -> None:
    """Results stay readable after their transaction; AsyncConnection works too (SQLAlchemy
    insists that its driver awaits); a failed transaction leaves the shared connection clean."""
    db = Database(
        f"sqlite+aiosqlite:///{tmp_path}/x.sqlite3?keel_inline={inline}", tables=Base.metadata
    )
    assert db.inline == inline
    try:
        async with db.transaction() as session:
            session.add_all([Counter(name="a", value=1), Counter(name="b", value=2)])
        async with db.transaction(readonly=True) as session:
            result = await session.execute(select(Counter.name).order_by(Counter.name))
        assert result.scalars().all() == ["a", "b"]

        async def undone() -> None:
            async with db.transaction() as session:
                session.add(Counter(name="c", value=3))
                await session.flush()
                raise RuntimeError("undo")

        with pytest.raises(RuntimeError):
            await undone()
        async with db.engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM counters"))).scalar() == 2
        async with db.transaction() as session:  # begins afresh on the same connection
            assert await session.scalar(select(Counter.value).where(Counter.name == "b")) == 2
    finally:
        await db.dispose()


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="keel_inline='sometimes'"):
        Database(f"sqlite+aiosqlite:///{tmp_path}/x.sqlite3?keel_inline=sometimes")
