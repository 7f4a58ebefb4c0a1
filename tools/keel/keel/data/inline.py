"""SQLite on the event loop's own thread: stdlib sqlite3 calls made inline under SQLAlchemy's
asyncio API (the `sqlite+keel_inline` dialect, which `Database` uses by default).

aiosqlite runs every call (cursor, execute, fetch, close, BEGIN, COMMIT) on a thread of its own
and wakes the event loop for each result, and SQLAlchemy's adapter crosses its greenlet bridge
for each: together most of a small transaction's cost. A statement on a WAL database with
`synchronous=NORMAL` takes tens of microseconds and a commit does not fsync, so this dialect
is SQLAlchemy's pysqlite dialect declared async: SQLAlchemy runs it inside its greenlet bridge
as usual, and the sqlite3 calls happen right there.

What could block the loop, and what happens instead:
- SQLite's busy handler (another process holds the write lock): connections have no busy
  timeout; a busy statement (BEGIN IMMEDIATE, mostly) is retried after an asynchronous sleep
  (growing steps, other tasks run meanwhile) until `busy_timeout` seconds have passed, then
  fails as SQLite's own would;
- a WAL checkpoint (it fsyncs): automatic checkpoints are off on these connections; `Database`
  runs a passive one on a worker thread every CHECKPOINT_EVERY write transactions;
- a large read: `?keel_inline=writes` sends read-only transactions to aiosqlite's thread.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import pool
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.util.concurrency import await_

DRIVER = "keel_inline"
"""The driver name in the URL: `sqlite+keel_inline:///path`."""

_T = TypeVar("_T")
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_BUSY_RECOVERY)
_FIRST_STEP, _LONGEST_STEP = 0.001, 0.05


def retrying(busy_timeout: float, fn: Callable[..., _T], *args: Any) -> _T:
    """`fn(*args)`, retried while SQLite is busy, after asynchronous sleeps (inside
    SQLAlchemy's greenlet bridge), for at most `busy_timeout` seconds."""
    deadline = 0.0
    step = _FIRST_STEP
    while True:
        try:
            return fn(*args)
        except sqlite3.OperationalError as error:
            if getattr(error, "sqlite_errorcode", None) not in _BUSY:
                raise
            now = time.monotonic()
            deadline = deadline or now + busy_timeout
            if now >= deadline:
                raise
        await_(asyncio.sleep(step))
        step = min(step * 2, _LONGEST_STEP)


async def _nothing() -> None:
    """An awaitable that completes at once: each statement awaits one, because SQLAlchemy's
    AsyncConnection.execute insists that its driver awaited something."""


class Cursor(sqlite3.Cursor):
    """A sqlite3 cursor as SQLAlchemy's asyncio results expect one: its rows are read when the
    statement's call returns (as aiosqlite's adapter does), so none are read after the
    transaction ended."""

    _rows: collections.deque[Any] | None = None

    async def _async_soft_close(self) -> None:
        if self.description is not None:
            self._rows = collections.deque(super().fetchall())

    def fetchone(self) -> Any:
        if self._rows is None:
            return super().fetchone()
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        if self._rows is None:
            return super().fetchmany(self.arraysize if size is None else size)
        rows = self._rows
        return [
            rows.popleft() for _ in range(min(len(rows), self.arraysize if size is None else size))
        ]

    def fetchall(self) -> list[Any]:
        if self._rows is None:
            return super().fetchall()
        rows, self._rows = list(self._rows), collections.deque()
        return rows


class Connection(sqlite3.Connection):
    """A sqlite3 connection whose cursors are `Cursor`s. `begin` is the statement its next
    transaction begins with (set by a `begin` event listener: BEGIN for a read-only one)."""

    begin = "BEGIN IMMEDIATE"

    def cursor(self, factory: Any = Cursor) -> Any:
        return super().cursor(factory)


class InlineDialect(SQLiteDialect_pysqlite):
    """SQLAlchemy's pysqlite dialect under the asyncio API, busy waits made asynchronous."""

    driver = DRIVER
    is_async = True
    has_terminate = True  # a connection dropped by the garbage collector is closed
    supports_statement_cache = True

    def __init__(self, busy_timeout: float = 30.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.busy_timeout = busy_timeout

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return pool.AsyncAdaptedQueuePool

    def create_connect_args(self, url: URL) -> Any:
        args, options = super().create_connect_args(url)
        options.update(timeout=0, isolation_level=None, check_same_thread=False, factory=Connection)
        return args, options

    def do_execute(self, cursor: Any, statement: Any, parameters: Any, context: Any = None) -> None:
        retrying(self.busy_timeout, cursor.execute, statement, parameters)
        await_(_nothing())

    def do_execute_no_params(self, cursor: Any, statement: Any, context: Any = None) -> None:
        retrying(self.busy_timeout, cursor.execute, statement)
        await_(_nothing())

    def do_executemany(
        self, cursor: Any, statement: Any, parameters: Any, context: Any = None
    ) -> None:
        retrying(self.busy_timeout, cursor.executemany, statement, parameters)
        await_(_nothing())

    def do_terminate(self, dbapi_connection: Any) -> None:
        dbapi_connection.close()

    def do_begin(self, dbapi_connection: Any) -> None:
        retrying(self.busy_timeout, dbapi_connection.execute, dbapi_connection.begin)

    def do_commit(self, dbapi_connection: Any) -> None:
        retrying(self.busy_timeout, dbapi_connection.commit)


registry.register(f"sqlite.{DRIVER}", __name__, "InlineDialect")


async def driver_connection(session: AsyncSession) -> sqlite3.Connection | None:
    """The sqlite3 connection of `session`'s transaction (begun now if it was not) when its
    calls run inline, else None: for statements Keel runs often with the driver's own API."""
    bind = session.bind
    if bind is None or bind.dialect.driver != DRIVER:
        return None
    connection = await session.connection()
    driver = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    return driver  # type: ignore[return-value]


def checkpoint(path: str) -> None:
    """A passive WAL checkpoint of `path` (call it on a worker thread: it fsyncs); skipped
    while another connection checkpoints."""
    connection = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except sqlite3.OperationalError:
        pass  # busy: another connection is checkpointing
    finally:
        connection.close()
