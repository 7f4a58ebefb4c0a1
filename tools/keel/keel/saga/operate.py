"""What an operator does with a service's sagas: list them, and resume a FAILED one.

    await keel.saga.recent(db, statuses=["FAILED"])   # newest first, one summary each
    await keel.saga.reopen(db, saga_id)               # FAILED → back to the status it stopped in

A reopened saga is left unheld: the next pass of the service's `Recovery` (any live process of
the service) takes it and drives it from where it stopped.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from keel.data import Database
from keel.saga import store
from keel.saga.lease import now
from keel.saga.tables import saga as saga_table
from keel.saga.tables import step as step_table

RESUMED = "resumed by an operator at "
"""How the note of a resume starts (on the saga's last recorded step)."""
LIMIT = 50
"""How many sagas `recent` returns by default."""


@dataclass(frozen=True, slots=True)
class Summary:
    """One saga in a listing: `keel saga list`."""

    id: str
    name: str
    status: str
    updated_at: datetime.datetime
    error: str
    """Its first error ("" if none)."""


class NotResumableError(Exception):
    """The saga is unknown, or not FAILED (or stopped before its status was recorded)."""


async def recent(
    db: Database, *, statuses: tuple[str, ...] | list[str] = (), limit: int = LIMIT
) -> list[Summary]:
    """Up to `limit` sagas, last updated first; only those in `statuses` if given."""
    query = select(
        saga_table.c.id,
        saga_table.c.name,
        saga_table.c.status,
        saga_table.c.updated_at,
        saga_table.c.error,
    )
    if statuses:
        query = query.where(saga_table.c.status.in_(list(statuses)))
    query = query.order_by(saga_table.c.updated_at.desc(), saga_table.c.id).limit(limit)
    async with db.transaction(readonly=True) as session:
        rows = (await session.execute(query)).all()
    return [Summary(r.id, r.name, r.status, r.updated_at, r.error) for r in rows]


async def reopen(db: Database, saga_id: str) -> str:
    """Return FAILED saga `saga_id` to the status it stopped in (RUNNING, FORWARD or
    COMPENSATING), unheld, for the service's recovery to drive; that status.

    One conditional update: of two operators resuming at once, one wins and the other gets
    NotResumableError, as for a saga that is unknown or not FAILED. A saga stopped FORWARD by a
    refused step gets that step back as STARTED with its `retried` count one higher: called
    again under a new key (`<saga id>/<step>/retry-<n>`), so the peer does not replay its stored
    refusal. The saga's first error stays; its last recorded step notes the resume."""
    moment = now()
    note = f"{RESUMED}{moment.isoformat()}"
    async with db.transaction() as session:
        row = (
            await session.execute(
                select(saga_table.c.status, saga_table.c.stopped_from).where(
                    saga_table.c.id == saga_id
                )
            )
        ).one_or_none()
        if row is None:
            raise NotResumableError(f"no saga {saga_id!r}")
        if row.status != store.FAILED:
            raise NotResumableError(f"saga {saga_id} is {row.status}, not FAILED")
        target: str = row.stopped_from
        if target not in store.UNFINISHED:
            raise NotResumableError(
                f"saga {saga_id} stopped before the status it stopped in was recorded"
            )
        won = await session.execute(
            saga_table.update()
            .where(
                saga_table.c.id == saga_id,
                saga_table.c.status == store.FAILED,
                saga_table.c.stopped_from == target,  # not stopped again meanwhile, elsewhere
            )
            .values(status=target, stopped_from=None, lease_until=None, updated_at=moment)
        )
        if not getattr(won, "rowcount", 0):
            raise NotResumableError(f"saga {saga_id} is no longer FAILED (resumed meanwhile?)")
        await _note(session, saga_id, target, note, moment)
    return target


async def _note(
    session: AsyncSession, saga_id: str, target: str, note: str, moment: datetime.datetime
) -> None:
    """Note the resume on the saga's last recorded step (its earlier error kept after it);
    a refused one past the pivot is reset to be called again."""
    last = (
        await session.execute(
            select(step_table.c.position, step_table.c.status, step_table.c.error)
            .where(step_table.c.saga_id == saga_id)
            .order_by(step_table.c.position.desc())
            .limit(1)
        )
    ).one_or_none()
    if last is None:
        return
    key = and_(step_table.c.saga_id == saga_id, step_table.c.position == last.position)
    if last.status == store.DONE:  # nothing to retry there: a replay never writes it again
        if last.error and target != store.COMPENSATING:  # (compensating: the undo's failure)
            await session.execute(step_table.update().where(key).values(error=""))
        return
    error = f"{note} (was: {last.error})" if last.error else note
    values: dict[str, object] = {"error": error, "updated_at": moment}
    if target == store.FORWARD and last.status == store.REFUSED:
        values |= {"status": store.STARTED, "retried": step_table.c.retried + 1}
    await session.execute(step_table.update().where(key).values(**values))
