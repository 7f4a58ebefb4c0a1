"""Handling deliveries with the inbox: a handler's effects and the event's inbox row commit
together, so an event redelivered at any later time has no second effect.

A fetched batch is handled in one transaction (one inbox lookup, one commit, then every ack).
If any handler of the batch raises, the transaction rolls back and each event is handled again
on its own, in its own transaction, so only the failing one is retried: a handler may thus run
twice for one delivery, with only the second run's effects committed. A handler that fails on
its own (or takes longer than KEEL_EVENTS_HANDLER_TIMEOUT) is retried after KEEL_EVENTS_BACKOFF;
after KEEL_EVENTS_MAX_DELIVER deliveries the event goes to the dead-letter subject.

A failure while the database does not answer (keel.events.outage) is not the handler's: the
delivery waits for the database and is handled again, without counting as a delivery. An
IntegrityError counts as "handled meanwhile by another delivery" only when the event's inbox
row is there; otherwise it is the handler's failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError, Message
from nats.aio.msg import Msg
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from keel.events import carry, outage, tables
from keel.events.dead_letters import dead_letter
from keel.events.metrics import metrics
from keel.events.spec import EventContext
from keel.runtime import logs

if TYPE_CHECKING:
    from keel.events.consumer import Loop

_log = logs.get_logger("keel.events")
_INSERT = insert(tables.inbox)
_SEEN = select(tables.inbox.c.event_id).where(
    tables.inbox.c.consumer == bindparam("consumer"),
    # (built once: `in_(ids)` per batch would leave a reference cycle for the collector)
    tables.inbox.c.event_id.in_(bindparam("ids", expanding=True)),
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A decoded delivery of an event."""

    message: Msg
    event: Message
    event_id: str
    delivery: int
    headers: dict[str, str]


async def decode(loop: Loop, messages: Sequence[Msg]) -> list[Delivery]:
    """Deliveries of `messages`; an undecodable one is dead-lettered at once."""
    subject = loop.spec.subject
    counted = metrics()
    found = []
    for message in messages:
        delivery = message.metadata.num_delivered or 1
        counted.delivered.labels(subject).inc()
        if delivery > 1:
            counted.redelivered.labels(subject).inc()
        headers = dict(message.headers or {})
        event_id = headers.get(carry.EVENT_ID) or headers.get(carry.MSG_ID) or ""
        try:
            event = loop.spec.message.FromString(message.data)
        except DecodeError as error:
            reason = f"undecodable payload: not {loop.spec.name}: {error}"
            await dead(loop, message, reason, 1)
            continue
        found.append(
            Delivery(
                message,
                event,
                event_id or f"seq-{message.metadata.sequence.stream}",
                delivery,
                headers,
            )
        )
    return found


async def handle(loop: Loop, deliveries: Sequence[Delivery]) -> None:
    """Handle a batch in one transaction; on a failure, each on its own."""
    if len(deliveries) > 1:
        try:
            async with loop.owner.database.transaction() as session:
                await _run(loop, session, deliveries)
        except Exception:
            pass
        else:
            await _acked(loop, deliveries)
            return
    for delivery in deliveries:
        await _handle_one(loop, delivery)


async def _handle_one(loop: Loop, delivery: Delivery) -> None:
    while True:
        try:
            async with loop.owner.database.transaction() as session:
                await _run(loop, session, [delivery])
        except Exception as error:
            if await outage.waited(
                loop.owner.database, error, loop.durable, lambda: loop.owner.stopping
            ):
                continue  # the database was away: not the handler's failure
            if isinstance(error, IntegrityError) and await _in_inbox(loop, delivery):
                break  # handled meanwhile through another delivery of the same event
            await _failed(loop, delivery, error)
            return
        break
    await _acked(loop, [delivery])


async def _in_inbox(loop: Loop, delivery: Delivery) -> bool:
    inbox = tables.inbox
    query = select(inbox.c.event_id).where(
        inbox.c.consumer == loop.durable, inbox.c.event_id == delivery.event_id
    )
    async with loop.owner.database.transaction(readonly=True) as session:
        return (await session.scalar(query)) is not None


async def _failed(loop: Loop, delivery: Delivery, error: Exception) -> None:
    """Retry `delivery` after the backoff, or dead-letter it after the last delivery."""
    reason = f"{type(error).__name__}: {error}"
    settings = loop.owner.settings
    if delivery.delivery >= settings.events_max_deliver:
        await dead(loop, delivery.message, reason, delivery.delivery)
        return
    backoff = settings.events_backoff
    delay = backoff[min(delivery.delivery, len(backoff)) - 1]
    _log.warning(
        "event handler failed",
        consumer=loop.durable,
        event_id=delivery.event_id,
        delivery=delivery.delivery,
        retry_in=delay,
        error=reason,
        correlation_id=delivery.headers.get(carry.CORRELATION, ""),
    )
    await delivery.message.nak(delay=delay)


async def _run(loop: Loop, session: AsyncSession, deliveries: Sequence[Delivery]) -> None:
    """Call the handlers of the deliveries not in the inbox, and add them to it."""
    ids = [d.event_id for d in deliveries]
    seen = set((await session.scalars(_SEEN, {"consumer": loop.durable, "ids": ids})).all())
    rows: list[dict[str, Any]] = []
    now = datetime.datetime.now(datetime.UTC)
    subject = loop.spec.subject
    for delivery in deliveries:
        if delivery.event_id in seen:
            continue
        seen.add(delivery.event_id)
        with carry.handling(loop.service, subject, delivery.headers) as correlation_id:
            context = EventContext(
                event_id=delivery.event_id,
                subject=subject,
                correlation_id=correlation_id,
                delivery=delivery.delivery,
                published_at=_published_at(delivery.headers),
                session=session,
            )
            async with asyncio.timeout(loop.owner.settings.events_handler_timeout):
                await loop.call(delivery.event, context)
        rows.append(
            {
                "consumer": loop.durable,
                "event_id": delivery.event_id,
                "subject": subject,
                "handled_at": now,
            }
        )
    if rows:
        await session.execute(_INSERT, rows)


async def _acked(loop: Loop, deliveries: Sequence[Delivery]) -> None:
    counter = metrics().acked.labels(loop.spec.subject)
    for delivery in deliveries:
        await delivery.message.ack()
        counter.inc()


async def dead(loop: Loop, message: Msg, reason: str, delivery: int) -> None:
    """Publish `message` to the dead-letter subject with `reason`, then terminate it."""
    assert loop.owner.js is not None
    await dead_letter(
        loop.owner.js,
        loop.service,
        loop.durable,
        message,
        subject=loop.spec.subject,
        reason=reason,
        delivery=delivery,
    )
    await message.term()
    metrics().dead_lettered.labels(loop.spec.subject).inc()
    _log.error(
        "event dead-lettered",
        consumer=loop.durable,
        subject=loop.spec.subject,
        delivery=delivery,
        error=reason,
    )


def _published_at(headers: dict[str, str]) -> datetime.datetime:
    text = headers.get(carry.PUBLISHED_AT)
    if text:
        with contextlib.suppress(ValueError):
            return datetime.datetime.fromisoformat(text)
    return datetime.datetime.now(datetime.UTC)
