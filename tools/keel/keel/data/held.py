"""Connections a Database keeps out of its pool when SQLite's calls run inline.

A pool checkout and return (the proxy, its finalizer, the reset, the events) costs about as
much as a small transaction's statements. SQLite's write transactions of a Database take turns
anyway, so they share one connection; read-only transactions each take an idle connection, or
a new one, and give it back. The connections are detached from the pool: `close` closes them,
and one that is left to the garbage collector is closed without a warning.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

IDLE_READERS = 4
"""Read-only connections kept open between transactions."""


async def _detached(engine: AsyncEngine) -> AsyncConnection:
    connection = await engine.connect()
    (await connection.get_raw_connection()).detach()
    return connection


def _usable(connection: AsyncConnection) -> bool:
    return not (connection.closed or connection.invalidated)


class Held:
    """The write transactions' connection and the idle read-only ones."""

    def __init__(self, writing: AsyncEngine, reading: AsyncEngine) -> None:
        """`reading`: an engine whose connections begin read-only transactions."""
        self._writing = writing
        self._reading = reading
        self._writer: AsyncConnection | None = None
        self._idle: list[AsyncConnection] = []

    async def writer(self) -> AsyncConnection:
        """The connection for write transactions (the caller holds the write lock)."""
        if self._writer is None or not _usable(self._writer):
            self._writer = await _detached(self._writing)
        return self._writer

    async def reader(self) -> AsyncConnection:
        """A connection for one read-only transaction; `give_back` when it ended."""
        while self._idle:
            connection = self._idle.pop()
            if _usable(connection):
                return connection
        return await _detached(self._reading)

    async def give_back(self, connection: AsyncConnection) -> None:
        """Keep `connection` for the next read-only transaction, or close it."""
        if (
            len(self._idle) < IDLE_READERS
            and _usable(connection)
            and not connection.in_transaction()
        ):
            self._idle.append(connection)
        else:
            await connection.close()

    async def close(self) -> None:
        """Close every connection held."""
        held, self._idle = [*self._idle, self._writer], []
        self._writer = None
        for connection in held:
            if connection is not None:
                await connection.close()
