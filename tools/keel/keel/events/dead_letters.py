"""Dead letters: events a service could not handle, kept in its dead-letter stream.

A dead letter is the event's payload and headers (its id, correlation id and trace context)
on `keel.dlq.<service>.<subject>`, plus `Keel-Error`, `Keel-Deliveries`, `Keel-Subject` and
`Keel-Consumer`. Listing reads the stream; replay publishes each again to the service's replay
subject of its subject (`keel.replay.<service>.<subject>`: only that service's consumer gets
it, not every subscriber of the subject), with a new `Nats-Msg-Id` so the duplicate window
does not drop it, and deletes it from the stream.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from keel.events import carry, names

_DLQ_HEADERS = (carry.ERROR, carry.DELIVERIES, carry.SUBJECT, carry.CONSUMER, carry.MSG_ID)


async def dead_letter(
    js: JetStreamContext,
    service: str,
    consumer: str,
    message: Msg,
    *,
    subject: str,
    reason: str,
    delivery: int,
) -> None:
    """Publish `message` (an event of `subject`, maybe delivered through its replay subject) to
    `service`'s dead-letter subject with the error; retried until the broker has it (the
    event is only terminated after)."""
    headers = {k: v for k, v in (message.headers or {}).items() if k != carry.MSG_ID}
    headers.update(
        {
            carry.ERROR: carry.header_text(reason),
            carry.DELIVERIES: str(delivery),
            carry.SUBJECT: subject,
            carry.CONSUMER: consumer,
        }
    )
    # one dead letter per stored message: a repeat of this very dead-lettering (a crash before
    # the term) is dropped as a duplicate; the same event replayed and failing again is not
    event_id = headers.get(carry.EVENT_ID, "")
    headers[carry.MSG_ID] = f"{event_id or 'dead'}.{consumer}.{message.metadata.sequence.stream}"
    delay = 0.1
    while True:
        try:
            await js.publish(names.dlq_subject(service, subject), message.data, headers=headers)
            return
        except Exception:
            if delay > 5:
                raise
            await asyncio.sleep(delay)
            delay *= 2


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter, as `keel events dlq` lists it."""

    sequence: int
    event_id: str
    subject: str
    deliveries: int
    error: str
    correlation_id: str
    payload: bytes
    headers: dict[str, str]


async def listing(js: JetStreamContext, service: str) -> list[DeadLetter]:
    """Every dead letter of `service`, oldest first."""
    stream = names.dlq_stream(service)
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return []
    found: list[DeadLetter] = []
    if info.state.messages == 0:
        return found
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            raw = await js.get_msg(stream, seq)
        except NotFoundError:
            continue
        headers = dict(raw.headers or {})
        found.append(
            DeadLetter(
                sequence=seq,
                event_id=headers.get(carry.EVENT_ID, ""),
                subject=headers.get(carry.SUBJECT, ""),
                deliveries=int(headers.get(carry.DELIVERIES, "0") or 0),
                error=headers.get(carry.ERROR, ""),
                correlation_id=headers.get(carry.CORRELATION, ""),
                payload=raw.data or b"",
                headers=headers,
            )
        )
    return found


async def replay(js: JetStreamContext, service: str, letter: DeadLetter) -> None:
    """Publish `letter` again to its subject, then delete it from the dead letters."""
    headers = {k: v for k, v in letter.headers.items() if k not in _DLQ_HEADERS}
    headers[carry.MSG_ID] = f"{letter.event_id or 'dead'}.replay.{letter.sequence}"
    await js.publish(names.replay_subject(service, letter.subject), letter.payload, headers=headers)
    await js.delete_msg(names.dlq_stream(service), letter.sequence)
