"""Who drives a saga: a lease on its row, renewed while the process drives it.

A process takes a saga by setting `lease_until` on its row (an atomic conditional UPDATE:
only an unfinished saga whose lease has ended can be taken), and holds it while it renews the
lease. The lease's end is also its token: every write of the holder is conditional on the row
still holding the end it last wrote, so a process that stalled past its lease (and whose saga
another process then took) finds out at its next write or renewal and stops driving, instead
of two processes driving one saga at once.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from keel.data import Database
from keel.runtime import logs
from keel.saga.tables import saga as saga_table

log = logs.get_logger("keel.saga")

Work = Callable[[AsyncSession, datetime.datetime], Awaitable[None]]


class LeaseLostError(Exception):
    """Another process took the saga (this one was stalled past its lease): stop driving it."""


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Lease:
    """This process's hold on saga `saga_id`, ending at `until` unless renewed."""

    def __init__(
        self, db: Database, saga_id: str, seconds: float, until: datetime.datetime
    ) -> None:
        self.db = db
        self.saga_id = saga_id
        self.seconds = seconds
        self.until: datetime.datetime | None = until
        self.lost = False
        """Whether another process took the saga (or this one released it)."""
        self._lock = asyncio.Lock()

    async def write(self, work: Work | None = None, *, keep: bool = True) -> None:
        """In one transaction: check that the saga is still held by this lease and renew it
        (end it, with `keep=False`), then `await work(session, moment)`. LeaseLostError if
        another process holds it now (nothing is written)."""
        async with self._lock:
            if self.until is None or self.lost:
                raise LeaseLostError(f"saga {self.saga_id} is no longer held by this process")
            moment = now()
            until = moment + datetime.timedelta(seconds=self.seconds) if keep else None
            async with self.db.transaction() as session:
                held = await session.execute(
                    saga_table.update()
                    .where(saga_table.c.id == self.saga_id, saga_table.c.lease_until == self.until)
                    .values(lease_until=until)
                )
                if not getattr(held, "rowcount", 0):
                    self.lost = True
                    raise LeaseLostError(f"saga {self.saga_id} was taken by another process")
                if work is not None:
                    await work(session, moment)
            self.until = until
            self.lost = until is None

    async def keep(self, lost: Callable[[], Any]) -> None:
        """Renew the lease every third of its length until cancelled; `lost()` if another
        process took the saga. A renewal that fails (the database is away) is tried again."""
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                await self.write()
            except LeaseLostError:
                if self.until is not None:  # taken, not released by this process
                    log.warning("saga lease lost", saga=self.saga_id)
                    lost()
                return
            except Exception as error:  # the database: the next renewal may get through
                log.warning("saga lease not renewed", saga=self.saga_id, error=repr(error))
