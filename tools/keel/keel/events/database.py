"""The service's database as the events runtime uses it: transactions and the dialect.

Accepts an SQLAlchemy `AsyncEngine`, an `async_sessionmaker`, or any object with
`transaction()` (an async context manager giving an `AsyncSession` that commits on exit, as
`keel.data.Database` does) and an `engine` attribute. Reads that write nothing use `read()`:
keel.data's read-only transactions (on SQLite they do not queue behind the writers).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

Transactions = Callable[[], AbstractAsyncContextManager[AsyncSession]]


class Database:
    """Transactions on a service's database, whatever form it was given in."""

    def __init__(self, database: Any) -> None:
        if isinstance(database, Database):
            self.begin: Transactions = database.begin
            self.read: Transactions = database.read
            self.dialect: str = database.dialect
            return
        if isinstance(database, AsyncEngine):
            maker = async_sessionmaker(database, expire_on_commit=False)
            engine = database
        elif isinstance(database, async_sessionmaker):
            maker = database
            engine = maker.kw["bind"]
        elif hasattr(database, "transaction"):
            self.begin = database.transaction
            self.read = self.begin
            with contextlib.suppress(TypeError, ValueError):
                if "readonly" in inspect.signature(database.transaction).parameters:
                    self.read = functools.partial(database.transaction, readonly=True)
            dialect = getattr(database, "dialect", None)  # keel.data.Database: no engine yet
            self.dialect = dialect if isinstance(dialect, str) else database.engine.dialect.name
            return
        else:
            raise TypeError(
                f"expected an AsyncEngine, async_sessionmaker or Database, not {database!r}"
            )

        @asynccontextmanager
        async def begin() -> AsyncIterator[AsyncSession]:
            async with maker() as session, session.begin():
                yield session

        self.begin = self.read = begin
        self.dialect = engine.dialect.name
