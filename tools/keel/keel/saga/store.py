"""A saga's recorded state in the service's database: reads, and the writes after each step
(each through the lease of the process driving the saga, see keel.saga.lease)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from keel.data import Database
from keel.saga.lease import Lease, now
from keel.saga.tables import saga as saga_table
from keel.saga.tables import step as step_table

RUNNING = "RUNNING"
"""Going forward."""
FORWARD = "FORWARD"
"""Past a pivot step (the point of no return): going forward only; a step that fails is
retried, never compensated."""
COMPENSATING = "COMPENSATING"
"""A step failed (or the code raised): undoing the steps done, last first."""
COMPLETED = "COMPLETED"
"""Every step done."""
COMPENSATED = "COMPENSATED"
"""Every step that may have had an effect undone."""
FAILED = "FAILED"
"""Stopped for a person to look at: the code's steps no longer match the recorded ones, a step
after the pivot was refused, or the body raised after it. `keel.saga.reopen` (`keel saga
resume`) returns it to the status it stopped in."""
UNFINISHED = (RUNNING, FORWARD, COMPENSATING)

STARTED = "STARTED"
"""The action was called (its outcome unknown until DONE or REFUSED)."""
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
    """Its last failure while unresolved: the refusal (REFUSED), the action's error (STARTED,
    being retried), or `compensating <step>: ...` (its compensation failing); "" once it
    is DONE or COMPENSATED. `resumed by an operator at ...` where a resume took the saga up."""
    updated_at: datetime.datetime
    retried: int = 0
    """How many resumes called its action again after a refusal (0: its first key)."""


@dataclass(frozen=True, slots=True)
class SagaState:
    """A saga as recorded: `keel.saga.show(db, id)`."""

    id: str
    name: str
    status: str
    data: Any
    error: str
    """The first failure: the step and error that turned the saga back (or stopped it). Later
    errors (compensations failing, retries) are the steps' own and never replace it."""
    lease_until: datetime.datetime | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    steps: tuple[StepState, ...]
    stopped_from: str | None = None
    """FAILED: the status it stopped in (RUNNING, FORWARD or COMPENSATING), which a resume
    returns it to; None otherwise."""

    @property
    def finished(self) -> bool:
        """Whether nothing more will happen to it (COMPLETED, COMPENSATED or FAILED)."""
        return self.status not in UNFINISHED

    @property
    def last_error(self) -> str:
        """The latest failure of a step still unresolved ("" if none)."""
        failing = [s for s in self.steps if s.error]
        return max(failing, key=lambda s: s.updated_at).error if failing else ""


def aware(moment: datetime.datetime | None) -> datetime.datetime | None:
    """A datetime read back from SQLite (naive, UTC) made aware."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=datetime.UTC)


async def create(db: Database, saga_id: str, name: str, data: Any, lease: float) -> Lease | None:
    """Record a new RUNNING saga held by the caller (its lease); None if `saga_id` exists."""
    moment = now()
    until = moment + datetime.timedelta(seconds=lease)
    try:
        async with db.transaction() as session:
            await session.execute(
                saga_table.insert().values(
                    id=saga_id,
                    name=name,
                    status=RUNNING,
                    data=data,
                    error="",
                    lease_until=until,
                    created_at=moment,
                    updated_at=moment,
                )
            )
    except IntegrityError:
        return None
    return Lease(db, saga_id, lease, until)


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
            StepState(s.position, s.name, s.status, s.result, s.error, s.updated_at, s.retried)
            for s in steps
        ),
        stopped_from=row.stopped_from,
    )


async def claim(db: Database, saga_id: str, lease: float) -> Lease | None:
    """Take an unfinished saga whose lease has ended (or that has none): its lease, or None
    if it is finished or another process holds it."""
    moment = now()
    until = moment + datetime.timedelta(seconds=lease)
    async with db.transaction() as session:
        result = await session.execute(
            saga_table.update()
            .where(
                saga_table.c.id == saga_id,
                saga_table.c.status.in_(UNFINISHED),
                or_(saga_table.c.lease_until.is_(None), saga_table.c.lease_until < moment),
            )
            .values(lease_until=until)
        )
    return Lease(db, saga_id, lease, until) if getattr(result, "rowcount", 0) else None


async def record_step(
    lease: Lease,
    position: int,
    name: str,
    status: str,
    *,
    result: Any = None,
    error: str = "",
    saga_status: str | None = None,
) -> None:
    """Record step `position`'s status (and result, and error) and renew the lease, at once;
    with `saga_status`, the saga's status too."""

    async def write(session: AsyncSession, moment: datetime.datetime) -> None:
        key = and_(step_table.c.saga_id == lease.saga_id, step_table.c.position == position)
        exists = (await session.execute(select(step_table.c.name).where(key))).one_or_none()
        values = {"status": status, "error": error, "updated_at": moment}
        if status != UNDONE:
            values["result"] = result
        if exists is None:
            await session.execute(
                step_table.insert().values(
                    saga_id=lease.saga_id, position=position, name=name, **values
                )
            )
        else:
            await session.execute(step_table.update().where(key).values(**values))
        changed: dict[str, Any] = {"updated_at": moment}
        if saga_status is not None:
            changed["status"] = saga_status
        await session.execute(
            saga_table.update().where(saga_table.c.id == lease.saga_id).values(**changed)
        )

    await lease.write(write)


async def step_failed(lease: Lease, position: int, error: str) -> None:
    """Note the latest failure of step `position` (its status and result stay)."""

    async def write(session: AsyncSession, moment: datetime.datetime) -> None:
        await session.execute(
            step_table.update()
            .where(step_table.c.saga_id == lease.saga_id, step_table.c.position == position)
            .values(error=error, updated_at=moment)
        )

    await lease.write(write)


async def set_status(
    lease: Lease, status: str, *, error: str = "", stopped_from: str | None = None
) -> None:
    """Set the saga's status; `error` becomes its error if it has none yet (the first failure
    stays). A finished saga's lease ends. FAILED records `stopped_from`, the status it had."""

    async def write(session: AsyncSession, moment: datetime.datetime) -> None:
        values: dict[str, Any] = {
            "status": status,
            "updated_at": moment,
            "stopped_from": stopped_from if status == FAILED else None,
        }
        if error:
            values["error"] = case((saga_table.c.error == "", error), else_=saga_table.c.error)
        await session.execute(
            saga_table.update().where(saga_table.c.id == lease.saga_id).values(**values)
        )

    await lease.write(write, keep=status in UNFINISHED)


async def release(lease: Lease) -> None:
    """Give up the lease of an unfinished saga (another process, or a later pass, takes it)."""
    await lease.write(keep=False)


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


async def claimable(db: Database, names: list[str], limit: int) -> list[tuple[str, str]]:
    """Up to `limit` (id, name) of the unfinished sagas called one of `names` that no process
    holds (no lease, or one that has ended), oldest first: a query on the status index that
    reads only unfinished rows."""
    moment = now()
    async with db.transaction(readonly=True) as session:
        rows = (
            await session.execute(
                select(saga_table.c.id, saga_table.c.name)
                .where(
                    saga_table.c.status.in_(UNFINISHED),
                    saga_table.c.name.in_(names),
                    or_(saga_table.c.lease_until.is_(None), saga_table.c.lease_until < moment),
                )
                .order_by(saga_table.c.created_at)
                .limit(limit)
            )
        ).all()
    return [(row.id, row.name) for row in rows]
