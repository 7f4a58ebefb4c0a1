"""What travels in an event's headers: its id, the correlation id and the trace context.

At publish time the headers take the current call's correlation id (a new one outside a call)
and trace context (a PRODUCER span's when tracing, else the inbound call's `traceparent`). A
consumer makes them the handler's context: a CONSUMER span that is a child of the publisher's,
and a bound call (keel.runtime.propagation) so logs carry the correlation id and calls the
handler makes pass it and the trace on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from keel.runtime import propagation, tracing

MSG_ID = "Nats-Msg-Id"
EVENT_ID = "Keel-Event-Id"
EVENT_NAME = "Keel-Event"
PUBLISHED_AT = "Keel-Published-At"
CORRELATION = propagation.CORRELATION_HEADER
TRACE = propagation.TRACE_CONTEXT
ERROR = "Keel-Error"
DELIVERIES = "Keel-Deliveries"
SUBJECT = "Keel-Subject"
CONSUMER = "Keel-Consumer"


def outgoing(subject: str) -> dict[str, str]:
    """Correlation id and trace context of the current call, for a new event on `subject`."""
    headers = {CORRELATION: propagation.correlation_id() or propagation.new_id()}
    tracer = tracing.tracer()
    if tracer is not None:
        span = tracer.start_span(
            f"{subject} publish",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "nats", "messaging.destination.name": subject},
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        span.end()
        headers.update((k, v) for k, v in carrier.items() if k in TRACE)
        return headers
    call = propagation.inbound()
    if call is not None:
        headers.update(
            (key, value) for key, value in call.metadata if key in TRACE and isinstance(value, str)
        )
    return headers


class _EventCall:
    """The call context an event handler runs in (no deadline; the event's headers as metadata)."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> Any:
        return self._metadata


@contextmanager
def handling(service: str, subject: str, headers: Mapping[str, str]) -> Iterator[str]:
    """Run a handler as the event's call: bound correlation id and trace; yields the id.

    Use it in a task of its own per event (the bound call is a context variable)."""
    metadata = tuple((key, headers[key]) for key in (CORRELATION, *TRACE) if headers.get(key))
    call = propagation.bind(service, _EventCall(metadata), metadata)
    tracer = tracing.tracer()
    if tracer is None:
        yield call.correlation_id
        return
    carrier = {key: value for key, value in metadata if key in TRACE}
    span = tracer.start_span(
        f"{subject} process",
        context=propagate.extract(carrier) if carrier else None,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "nats",
            "messaging.destination.name": subject,
            "messaging.consumer.group.name": service,
        },
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield call.correlation_id
    except BaseException as error:
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        raise
    finally:
        otel_context.detach(cast("Any", token))
        span.end()


def header_text(text: str, limit: int = 1000) -> str:
    """`text` as a NATS header value: one line, at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
