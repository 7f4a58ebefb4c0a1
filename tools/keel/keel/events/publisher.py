"""`Publisher`: events written to the outbox in the transaction of the state change.

    async with db.transaction() as session:
        session.add(order)
        await OrderServicePublisher(session).order_placed(orders_pb2.OrderPlaced(...))
    # committed together; the relay publishes the event soon after

A commit that wrote events wakes the relays of this process at once (an in-process signal);
other processes' relays find the rows at their next poll.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
from typing import TYPE_CHECKING, Any, ClassVar

from google.protobuf.message import Message

from keel.events.spec import EventSpec

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

_PENDING = "keel_events_pending"
_waiting: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}


def wake_on_commit(event: asyncio.Event) -> None:
    """Set `event` (on its loop) whenever a session of this process commits events."""
    _waiting[event] = asyncio.get_running_loop()


def forget(event: asyncio.Event) -> None:
    """Stop setting `event`."""
    _waiting.pop(event, None)


def _committed(session: Any) -> None:
    if session.info.pop(_PENDING, False):
        for waiting, loop in list(_waiting.items()):
            loop.call_soon_threadsafe(waiting.set)


def _rolled_back(session: Any) -> None:
    session.info.pop(_PENDING, None)


@functools.cache
def _prepared() -> Any:
    """The outbox insert, and the commit listeners set up (on first publish: a process that
    only imports generated modules, as the gateway does, never loads SQLAlchemy for it)."""
    from sqlalchemy import event, insert  # noqa: PLC0415
    from sqlalchemy.orm import Session  # noqa: PLC0415

    from keel.events import tables  # noqa: PLC0415

    event.listen(Session, "after_commit", _committed)
    event.listen(Session, "after_rollback", _rolled_back)
    return insert(tables.outbox)


_COLUMNS = ("id", "subject", "stream", "name", "payload", "headers", "created_at")


def _same(value: Any) -> Any:
    return value


@functools.cache
def _sqlite_insert() -> tuple[str, dict[str, Any]]:
    """The outbox insert in SQLite's SQL, and the bind processors of its columns (SQLAlchemy's
    own, so the relay reads the rows back as if SQLAlchemy had written them)."""
    from sqlalchemy.dialects import sqlite  # noqa: PLC0415 (see _prepared)

    from keel.events import tables  # noqa: PLC0415

    dialect = sqlite.dialect()
    processors = {}
    for name in _COLUMNS:
        processor = tables.outbox.c[name].type.bind_processor(dialect)
        if processor is not None:
            processors[name] = processor
    places = ", ".join("?" for _ in _COLUMNS)
    return f"INSERT INTO {tables.OUTBOX} ({', '.join(_COLUMNS)}) VALUES ({places})", processors


class Publisher:
    """Base of generated publishers: each method adds an event to the session's transaction.
    `__keel_publishes__` names the events the service declares it publishes."""

    __keel_publishes__: ClassVar[tuple[EventSpec, ...]] = ()

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _publish(self, spec: EventSpec, event: Message) -> str:
        """Add `event` to the outbox in the session's transaction; return its id.

        The correlation id and trace context of the call being handled go with it.
        """
        if not isinstance(event, spec.message):
            raise TypeError(f"{spec.subject} carries {spec.name}, not {type(event).__name__}")
        from keel.data import inline  # noqa: PLC0415 (see _prepared)
        from keel.events import carry  # noqa: PLC0415
        from keel.events.ids import new_event_id  # noqa: PLC0415

        statement = _prepared()
        event_id = new_event_id()
        row = {
            "id": event_id,
            "subject": spec.subject,
            "stream": spec.stream,
            "name": spec.name,
            "payload": event.SerializeToString(),
            "headers": carry.outgoing(spec.subject),
            "created_at": datetime.datetime.now(datetime.UTC),
        }
        driver = await inline.driver_connection(self.session)
        if driver is None:
            await self.session.execute(statement, row)
        else:  # SQLite, calls inline: the driver's insert, in the same transaction
            sql, processors = _sqlite_insert()
            driver.execute(sql, [processors.get(k, _same)(row[k]) for k in _COLUMNS])
        self.session.sync_session.info[_PENDING] = True
        return event_id
