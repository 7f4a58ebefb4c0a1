"""A store's integrity conflicts in its domain's own terms, and stores joined to a session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Generic, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


@contextmanager
def conflicts(into: Callable[[str], Exception]) -> Iterator[None]:
    """Within the block, an IntegrityError (a unique or foreign key the change breaks) is
    raised as `into(reason)`, the database's first line: the domain never sees SQLAlchemy."""
    try:
        yield
    except IntegrityError as error:
        raise into(str(error.orig).splitlines()[0]) from None


class Joined(Generic[T]):
    """A store whose every transaction is one given session: the domain's changes join a
    transaction opened elsewhere (a keyed call's, keel.idempotency) and commit with it.

        Joined(call.session, SqlTransaction, ConflictError)

    `transaction()` gives `wrap(session)`, flushes it when the block ends, and raises the
    block's integrity conflicts as `into(reason)` (see `conflicts`)."""

    def __init__(
        self,
        session: AsyncSession,
        wrap: Callable[[AsyncSession], T],
        into: Callable[[str], Exception],
    ) -> None:
        self.session = session
        self._wrap = wrap
        self._into = into

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[T]:
        """The session itself, as the store's transaction; flushed when the block ends."""
        with conflicts(self._into):
            yield self._wrap(self.session)
            await self.session.flush()
