"""A saga's recorded state in the service's database: reads and the writes after each step."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError

from keel.data import Database
from keel.saga.tables import saga as saga_table
from keel.saga.tables import step as step_table

RUNNING = "RUNNING"
"""Going forward."""
COMPENSATING = "COMPENSATING"
"""A step failed (or the code raised): undoing the steps done, last first."""
COMPLETED = "COMPLETED"
"""Every step done."""
COMPENSATED = "COMPENSATED"
"""Every step that may have had an effect undone."""
FAILED = "FAILED"
"""Stopped for a person to look at: the code's steps no longer match the recorded ones."""
UNFINISHED = (RUNNING, COMPENSATING)

STARTED = "STARTED"
"""The action was called (its outcome unknown until DONE or FAILED)."""
DONE = "DONE"
"""The action returned; its result is recorded."""
REFUSED = "REFUSED"
"""The action failed with a final error: it had no effect, so there is nothing to undo."""
UNDONE = "COMPENSATED"
"""The compensation returned."""


@dataclass(frozen=True, slots=True)
class StepState:
    """One recorded step."""

    position: int
    name: str
    status: str
    result: Any
    error: str
    updated_at: datetime.datetime


@dataclass(frozen=True, slots=True)
class SagaState:
    """A saga as recorded: `keel.saga.show(db, id)`."""

    id: str
    name: str
    status: str
    data: Any
    error: str
    lease_until: datetime.datetime | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    steps: tuple[StepState, ...]

    @property
    def finished(self) -> bool:
        """Whether nothing more will happen to it (COMPLETED, COMPENSATED or FAILED)."""
        return self.status not in UNFINISHED


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def aware(moment: datetime.datetime | None) -> datetime.datetime | None:
    """A datetime read back from SQLite (naive, UTC) made aware."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=datetime.UTC)


async def create(db: Database, saga_id: str, name: str, data: Any, lease: float) -> bool:
    """Record a new RUNNING saga held by the caller; False if `saga_id` exists already."""
    moment = now()
    try:
        async with db.transaction() as session:
            await session.execute(
                saga_table.insert().values(
                    id=saga_id,
                    name=name,
                    status=RUNNING,
                    data=data,
                    error="",
                    lease_until=moment + datetime.timedelta(seconds=lease),
                    created_at=moment,
                    updated_at=moment,
                )
            )
    except IntegrityError:
        return False
    return True


async def load(db: Database, saga_id: str) -> SagaState | None:
    """The saga `saga_id` with its steps, or None."""
    async with db.transaction(readonly=True) as session:
        row = (
            await session.execute(select(saga_table).where(saga_table.c.id == saga_id))
        ).one_or_none()
        if row is None:
            return None
        steps = (
            await session.execute(
                select(step_table)
                .where(step_table.c.saga_id == saga_id)
                .order_by(step_table.c.position)
            )
        ).all()
    return SagaState(
        id=row.id,
        name=row.name,
        status=row.status,
        data=row.data,
        error=row.error,
        lease_until=aware(row.lease_until),
        created_at=row.created_at,
        updated_at=row.updated_at,
        steps=tuple(
            StepState(s.position, s.name, s.status, s.result, s.error, s.updated_at) for s in steps
        ),
    )


async def claim(db: Database, saga_id: str, lease: float) -> bool:
    """Take an unfinished saga whose lease has ended (or that has none); False if not."""
    moment = now()
    async with db.transaction() as session:
        result = await session.execute(
            saga_table.update()
            .where(
                saga_table.c.id == saga_id,
                saga_table.c.status.in_(UNFINISHED),
                or_(saga_table.c.lease_until.is_(None), saga_table.c.lease_until < moment),
            )
            .values(lease_until=moment + datetime.timedelta(seconds=lease), updated_at=moment)
        )
    return bool(getattr(result, "rowcount", 0))


async def record_step(
    db: Database,
    saga_id: str,
    position: int,
    name: str,
    status: str,
    *,
    lease: float,
    result: Any = None,
    error: str = "",
) -> None:
    """Record step `position`'s status (and result) and renew the saga's lease, at once."""
    moment = now()
    async with db.transaction() as session:
        key = and_(step_table.c.saga_id == saga_id, step_table.c.position == position)
        exists = (await session.execute(select(step_table.c.name).where(key))).one_or_none()
        values = {"status": status, "error": error, "updated_at": moment}
        if status != UNDONE:
            values["result"] = result
        if exists is None:
            await session.execute(
                step_table.insert().values(saga_id=saga_id, position=position, name=name, **values)
            )
        else:
            await session.execute(step_table.update().where(key).values(**values))
        await session.execute(
            saga_table.update()
            .where(saga_table.c.id == saga_id)
            .values(lease_until=moment + datetime.timedelta(seconds=lease), updated_at=moment)
        )


async def set_status(
    db: Database, saga_id: str, status: str, lease: float, *, error: str | None = None
) -> None:
    """Set the saga's status (and error); a finished saga's lease is released."""
    moment = now()
    values: dict[str, Any] = {"status": status, "updated_at": moment}
    values["lease_until"] = (
        None if status not in UNFINISHED else moment + datetime.timedelta(seconds=lease)
    )
    if error is not None:
        values["error"] = error
    async with db.transaction() as session:
        await session.execute(
            saga_table.update().where(saga_table.c.id == saga_id).values(**values)
        )


async def release(db: Database, saga_id: str) -> None:
    """Give up the lease of an unfinished saga (another process, or a later resume, takes it)."""
    async with db.transaction() as session:
        await session.execute(
            saga_table.update().where(saga_table.c.id == saga_id).values(lease_until=None)
        )


async def unfinished(db: Database, name: str) -> list[tuple[str, datetime.datetime | None]]:
    """The ids and lease ends of the unfinished sagas called `name`, oldest first."""
    async with db.transaction(readonly=True) as session:
        rows = (
            await session.execute(
                select(saga_table.c.id, saga_table.c.lease_until)
                .where(saga_table.c.name == name, saga_table.c.status.in_(UNFINISHED))
                .order_by(saga_table.c.created_at)
            )
        ).all()
    return [(row.id, aware(row.lease_until)) for row in rows]
