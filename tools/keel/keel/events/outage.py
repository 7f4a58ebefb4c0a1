"""Telling a database outage from a handler's failure.

An error that may mean the database is away (a lost or refused connection, a timeout) is
checked with a probe (`SELECT 1` in a read-only transaction). If the probe fails too, the
database is away: `waited` waits until it answers again, so the delivery is handled again
without counting as a failed delivery. If the probe answers, the error was the handler's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from keel.data import Database
from keel.runtime import logs

_log = logs.get_logger("keel.events")
_PROBE_TIMEOUT = 5.0
_MAX_WAIT = 5.0


class AbandonedError(Exception):
    """The consumers stopped while waiting for the database."""


def suspicious(error: BaseException) -> bool:
    """Whether `error` may come from the database being away (then worth a probe)."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, OperationalError | InterfaceError | DisconnectionError | OSError)


async def answers(database: Database) -> bool:
    """Whether the database answers a probe now."""
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT), database.transaction(readonly=True) as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


async def waited(
    database: Database, error: BaseException, consumer: str, stopping: Callable[[], bool]
) -> bool:
    """If `error` came from a database outage, wait until the database answers and return
    True; False if the error is not an outage's. AbandonedError if `stopping()` turns true."""
    if not suspicious(error) or await answers(database):
        return False
    _log.warning("database unavailable: event handling waits", consumer=consumer, error=repr(error))
    delay = 0.1
    while not await answers(database):
        if stopping():
            raise AbandonedError(f"stopped while the database was unavailable: {error!r}")
        await asyncio.sleep(delay)
        delay = min(_MAX_WAIT, delay * 2)
    _log.info("database available again", consumer=consumer)
    return True
