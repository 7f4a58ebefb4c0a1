"""`keel.data.Database`: a service's own database, SQLAlchemy 2 asyncio, from settings.

    db = Database.for_service("catalog")
    async with db.transaction() as session:  # one transaction: commit on exit, rollback on error
        session.add(Row(...))

`KEEL_DATABASE_URL` (an async URL: `postgresql+asyncpg://...`, `sqlite+aiosqlite:///...`)
names it; without one, a SQLite file `<state dir>/<name>.sqlite3`, the state dir being
`KEEL_STATE_DIR`, else `.keel/state/<name>` under the current folder. SQLite runs in WAL mode
with foreign keys on; a transaction takes the write lock at BEGIN (`BEGIN IMMEDIATE`), a
read-only one does not, so several processes (`KEEL_WORKERS`) share one file: writers queue,
readers run beside them, and no transaction fails or loses an update for having read before
another wrote. Within one process, the write transactions of a Database take turns on an
asyncio lock before they begin, so only other processes' writers make one wait for SQLite's
lock (up to BUSY_TIMEOUT_SECONDS).

SQLite's calls run inline on the event loop's thread (keel.data.inline: no thread hop per call;
a busy write lock is waited for in asynchronous sleeps, checkpoints run on a worker thread),
and the connections are kept out of the pool (keel.data.held). The URL parameter `keel_inline`
chooses: `all` (the default), `writes` (read-only transactions make their calls on aiosqlite's
thread: for large reads) or `off` (aiosqlite's thread for every call, SQLite's busy handler).
A Database serves one event loop at a time (one per process, as `keel.serve` runs them).

The engine is made on first use in each process, so a Database made before `keel.serve` forks
its workers gives each worker its own connections.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, String
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine
from sqlalchemy.util.concurrency import greenlet_spawn

from keel.data import inline, postgres, sqlite
from keel.data.held import Held
from keel.runtime import config

BUSY_TIMEOUT_SECONDS = 30.0
"""How long a SQLite writer waits for another process's write transaction to end."""
CHECKPOINT_EVERY = 500
"""Write transactions of a Database between its WAL checkpoints (SQLite, calls inline)."""
INLINE = "keel_inline"
"""The URL parameter that says which SQLite calls run inline: all, writes or off."""
_INLINE_MODES = ("all", "writes", "off")


class DataError(Exception):
    """A database or migration problem, told in one line."""


def id_type(length: int = 64) -> TypeEngine[str]:
    """The column type for `new_id` keys: a string compared byte by byte (PostgreSQL's "C"
    collation; SQLite's default), so ordering by it is ordering by creation time."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def state_folder(name: str, settings: config.Settings | None = None) -> Path:
    """The service's state folder, made or not: KEEL_STATE_DIR, else .keel/state/<name>."""
    settings = settings or config.current()
    if settings.state_dir:
        return Path(settings.state_dir)
    return Path.cwd() / ".keel" / "state" / name


def database_file(name: str, settings: config.Settings | None = None) -> Path:
    """The SQLite file of service `name` without KEEL_DATABASE_URL (made or not)."""
    return state_folder(name, settings) / f"{name}.sqlite3"


def state_dir(name: str, settings: config.Settings | None = None) -> Path:
    """The service's state folder (created): KEEL_STATE_DIR, else .keel/state/<name>."""
    settings = settings or config.current()
    folder = state_folder(name, settings)
    if not settings.state_dir:
        root = Path.cwd() / ".keel"
        if not root.exists():
            root.mkdir()
            (root / ".gitignore").write_text("# local state of `keel dev`\n*\n")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _commit_and_close(session: Session) -> None:
    try:
        session.commit()
    finally:
        session.close()  # rolls back when the commit failed


class Database:
    """One service's database: an async engine per process and transactions on it."""

    def __init__(self, url: str | URL, *, tables: MetaData | None = None) -> None:
        """`url`: a SQLAlchemy async URL. `tables`: create these tables on first use (for
        throwaway databases; real ones get theirs from migrations)."""
        self.url = make_url(url)
        self._tables = tables
        self._creating = asyncio.Lock()
        self._writing: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._writer: asyncio.Task[Any] | None = None
        self._folder = ""  # a temporary database's, removed by dispose
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._readers: async_sessionmaker[AsyncSession] | None = None
        self._reading: AsyncEngine | None = None  # read-only transactions' own (keel_inline=writes)
        self._held: Held | None = None  # SQLite, calls inline: connections out of the pool
        self._pid = 0
        self.inline = self.url.query.get(INLINE, "all") if self.dialect == "sqlite" else "off"
        """Which SQLite calls run inline on the event loop's thread: all, writes or off."""
        if self.inline not in _INLINE_MODES:
            raise DataError(f"{INLINE}={self.inline!r}: expected one of {', '.join(_INLINE_MODES)}")
        self._writes = 0
        self._checkpoint: asyncio.Task[None] | None = None

    @classmethod
    def for_service(cls, name: str, settings: config.Settings | None = None) -> Database:
        """The database of service `name` (the folder name under services/) from settings."""
        settings = settings or config.current()
        if settings.database_url:
            return cls(settings.database_url)
        state_dir(name, settings)  # (made, with its .gitignore)
        return cls(f"sqlite+aiosqlite:///{database_file(name, settings).resolve()}")

    @classmethod
    def temporary(cls, tables: MetaData | None = None) -> Database:
        """A private SQLite database in a temporary folder, removed by `dispose` (or when
        the Database is garbage): for tests and examples. `tables` are created on first use."""
        folder = tempfile.mkdtemp(prefix="keel-db-")
        database = cls(f"sqlite+aiosqlite:///{folder}/data.sqlite3", tables=tables)
        database._folder = folder
        weakref.finalize(database, shutil.rmtree, folder, True)
        return database

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql` (the URL's backend)."""
        return self.url.get_backend_name()

    @property
    def engine(self) -> AsyncEngine:
        """This process's engine (made on first use, again after a fork)."""
        if self._engine is None or self._pid != os.getpid():
            self._engine = self._create_engine()
            self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
            self._reading = None
            if self.inline == "writes":
                self._reading = self._create_engine(inline_calls=False)
            readonly = (self._reading or self._engine).execution_options(
                keel_readonly=True, postgresql_readonly=True
            )
            self._readers = async_sessionmaker(readonly, expire_on_commit=False)
            # (a forked worker's copies of its parent's connections are left alone)
            self._held = Held(self._engine, readonly) if self.inline != "off" else None
            self._pid = os.getpid()
        return self._engine

    def _create_engine(self, *, inline_calls: bool | None = None) -> AsyncEngine:
        if self.dialect != "sqlite":
            engine = create_async_engine(self.url)
            postgres.configure(engine)  # pings a pooled connection when it was idle
            return engine
        database = self.url.database or ""
        if database in ("", ":memory:") or "mode=memory" in str(self.url):
            raise DataError("use Database.temporary() for a throwaway SQLite database")
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        if inline_calls is None:
            inline_calls = self.inline != "off"
        url = self.url.difference_update_query([INLINE])
        if inline_calls:
            url = url.set(drivername=f"sqlite+{inline.DRIVER}")
            options: dict[str, Any] = {"busy_timeout": BUSY_TIMEOUT_SECONDS}
        else:
            options = {"connect_args": {"timeout": BUSY_TIMEOUT_SECONDS}}
        # _sqlite_events rolls back what is left open
        engine = create_async_engine(url, pool_reset_on_return=None, **options)
        sqlite.configure(engine, inline_calls=inline_calls, busy_timeout=BUSY_TIMEOUT_SECONDS)
        return engine

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[AsyncSession]:
        """An AsyncSession in one transaction: committed when the block ends, rolled back
        when it raises. Objects stay readable after the commit (expire_on_commit=False).

        `readonly=True`: a transaction that only reads, which does not wait for writers (on
        SQLite a plain BEGIN; on PostgreSQL a READ ONLY transaction: a write fails). On SQLite
        the write transactions of this Database take turns (an asyncio lock), so one inside
        another in the same task raises DataError instead of waiting for itself."""
        engine = self.engine
        if self._tables is not None:
            async with self._creating:  # concurrent first transactions wait for the tables
                if self._tables is not None:
                    async with engine.begin() as connection:
                        await connection.run_sync(self._tables.create_all)
                    self._tables = None
        if self.dialect != "sqlite":
            async with self._session(readonly) as session:
                yield session
            return
        held = self._held
        if readonly:
            if held is None or self.inline == "writes":
                async with self._session(True) as session:
                    yield session
                return
            connection = await held.reader()
            try:
                async with self._session(True, connection) as session:
                    yield session
            finally:
                await held.give_back(connection)
            return
        task = asyncio.current_task()
        if task is not None and task is self._writer:
            raise DataError("a write transaction inside another of the same database")
        async with self._write_lock():
            self._writer = task
            try:
                shared = None if held is None else await held.writer()
                async with self._session(False, shared) as session:
                    yield session
            finally:
                self._writer = None
        if self.inline != "off":
            self._wrote()
            await asyncio.sleep(0)  # a write with calls inline never yields: let others run

    @asynccontextmanager
    async def _session(
        self, readonly: bool, bind: AsyncConnection | None = None
    ) -> AsyncIterator[AsyncSession]:
        """A session whose transaction begins with its first statement and ends with the block,
        committed and closed in one step through SQLAlchemy's greenlet bridge (AsyncSession's
        own context managers take three steps, and a task to shield the close)."""
        maker = self._readers if readonly else self._sessions
        assert maker is not None
        session = maker() if bind is None else maker(bind=bind)
        try:
            yield session
        except BaseException:
            await asyncio.shield(session.close())  # rolls back
            raise
        await greenlet_spawn(_commit_and_close, session.sync_session)

    def _wrote(self) -> None:
        """Count a write transaction; every CHECKPOINT_EVERY, checkpoint on a worker thread."""
        self._writes += 1
        if self._writes % CHECKPOINT_EVERY or (self._checkpoint and not self._checkpoint.done()):
            return
        path = self.url.database or ""
        self._checkpoint = asyncio.create_task(asyncio.to_thread(inline.checkpoint, path))

    def _write_lock(self) -> asyncio.Lock:
        """This event loop's lock for SQLite write transactions (one writer at a time)."""
        loop = asyncio.get_running_loop()
        if self._writing is None or self._writing[0] is not loop:
            self._writing = (loop, asyncio.Lock())
        return self._writing[1]

    async def dispose(self) -> None:
        """Close this process's connections (a later use opens new ones); a temporary
        database is removed."""
        checkpoint, self._checkpoint = self._checkpoint, None
        if checkpoint is not None and checkpoint.get_loop() is asyncio.get_running_loop():
            await checkpoint
        if self._engine is not None and self._pid == os.getpid():
            if self._held is not None:
                await self._held.close()
            await self._engine.dispose()
            if self._reading is not None:
                await self._reading.dispose()
        self._engine = self._reading = None
        self._held = None
        self._sessions = self._readers = None
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = ""

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"
