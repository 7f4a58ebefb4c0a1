"""The SQLite side of `keel.data.Database`: its connections' settings and how its transactions
begin (BEGIN IMMEDIATE takes the write lock at once, a read-only transaction's BEGIN does not)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


def configure(engine: AsyncEngine, *, inline_calls: bool, busy_timeout: float) -> None:
    """Set up `engine`'s SQLite connections (WAL, foreign keys, ...), BEGIN or BEGIN IMMEDIATE
    as its transactions need, and a rollback on return only when one is left open."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # Keel emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        # Setting up may wait for another process's lock (WAL being turned on, its recovery):
        # SQLite's busy handler waits, here even with calls inline (a connection is made rarely).
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # WAL: a crash loses nothing committed
        cursor.execute("PRAGMA foreign_keys = ON")
        if inline_calls:  # keel.data.inline: busy waits are asynchronous, checkpoints threaded
            cursor.execute("PRAGMA wal_autocheckpoint = 0")
            cursor.execute("PRAGMA busy_timeout = 0")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        reading = connection.get_execution_options().get("keel_readonly", False)
        sql = "BEGIN" if reading else "BEGIN IMMEDIATE"
        dbapi_connection = connection.connection.dbapi_connection
        if inline_calls:  # emitted by InlineDialect.do_begin (busy: waits asynchronously)
            dbapi_connection.begin = sql
        else:  # one call on aiosqlite's thread (exec_driver_sql would make three)
            dbapi_connection.run_async(lambda driver: driver.execute(sql))

    @event.listens_for(engine.sync_engine.pool, "reset")
    def _reset(dbapi_connection: Any, _record: Any, state: Any) -> None:
        # a returned connection is rolled back only if a transaction is open (the engine's
        # rollback-on-return would always cost a call)
        driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        if state.asyncio_safe and driver.in_transaction:
            dbapi_connection.rollback()
