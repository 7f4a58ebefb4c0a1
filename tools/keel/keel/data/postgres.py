"""The PostgreSQL side of `keel.data.Database`: a pooled connection is pinged before use only
when it has been idle, not at every checkout.

SQLAlchemy's `pool_pre_ping` pings at every checkout: a round trip and about a third of a small
transaction's Python. A connection used a moment ago is alive as far as a ping could tell; one
idle for longer than IDLE_PING_SECONDS is pinged, and replaced if the ping fails (a restarted
server, a dropped connection). A server lost while its connections are busy fails their
transactions either way; SQLAlchemy then replaces every older pooled connection.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine

IDLE_PING_SECONDS = 1.0
"""A pooled connection idle for longer is pinged before use."""
_RETURNED = "keel_returned_at"


def configure(engine: AsyncEngine) -> None:
    """Ping `engine`'s pooled connections before use when they have been idle."""
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_RETURNED] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED)
        if returned is None or time.monotonic() - returned <= IDLE_PING_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.InvalidatePoolError(f"ping failed: {error!r}") from error
