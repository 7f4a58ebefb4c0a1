"""What travels from a call being handled to every call it makes.

The server binds the inbound call (its service, deadline and metadata) in a context variable;
generated clients read it for outgoing calls, so deadlines shrink along a chain of calls and one
correlation id follows a request through every service. Everything derived from the metadata
(the correlation id, the headers to pass on) is computed on first use: a call that logs nothing
and calls no one pays only for binding.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from contextvars import ContextVar

from keel.runtime import tracing
from keel.runtime.context import (
    AUTHORIZATION_HEADER,
    CALLER_HEADER,
    CLAIMS_HEADER,
    CORRELATION_HEADER,
    SUBJECT_HEADER,
    CallContext,
    Context,
    Metadata,
    correlation_from,
    new_id,
)

__all__ = [
    "CALLER",
    "CORRELATION_HEADER",
    "PROPAGATED",
    "TRACE_CONTEXT",
    "bind",
    "correlation_from",
    "correlation_id",
    "detached",
    "inbound",
    "new_id",
    "outbound_metadata",
    "remaining",
]

TRACE_CONTEXT = ("traceparent", "tracestate")
PROPAGATED = (*TRACE_CONTEXT, AUTHORIZATION_HEADER, SUBJECT_HEADER, CLAIMS_HEADER)
"""Inbound metadata copied to outbound calls as is (the trace context, the end user's bearer
token and identity), unless the outbound call sets its own."""
CALLER = CALLER_HEADER
"""Outbound metadata naming the calling service (the full name of the service handling)."""


def passed_on(call: Context) -> list[tuple[str, str]]:
    """Inbound metadata to copy to outbound calls (trace context only when not tracing)."""
    skip = TRACE_CONTEXT if tracing.enabled() else ()
    return [
        (key, value)
        for key, value in call.metadata
        if key in PROPAGATED and key not in skip and isinstance(value, str)
    ]


_inbound: ContextVar[Context | None] = ContextVar("keel_inbound", default=None)
_carried: ContextVar[tuple[str, str]] = ContextVar("keel_carried", default=("", ""))
"""The correlation id and service of the call that began detached work (see `detached`)."""


_received: ContextVar[list[Metadata] | tuple[()]] = ContextVar("keel_received", default=())
"""The metadata grpc read to look up the method of the call about to be bound, until `bind`
takes it (see `receive`; tasks the call starts share the emptied list)."""


def receive(metadata: Metadata) -> None:
    """Keep the metadata grpc read to look up the method of the call this task is about to
    handle, for that call's `bind` (once), so it is not read from the call again.

    A Keel server's method table does this for every call (keel.runtime.dispatch); grpc.aio
    builds the metadata anew each time it is asked for it.
    """
    _received.set([metadata])


def bind(service: str, context: CallContext, metadata: Metadata | None = None) -> Context:
    """Record the call being handled (the server does this for every call) and return its
    keel.Context; `metadata` if the caller already read it from `context`, else what `receive`
    kept for it, if anything."""
    if metadata is None:
        kept = _received.get()
        if kept:  # for this call alone: not for tasks it starts
            metadata = kept.pop()
    call = Context(service, context, metadata)
    _inbound.set(call)
    return call


def inbound() -> Context | None:
    """The call being handled, if any."""
    return _inbound.get()


def correlation_id() -> str:
    """The correlation id of the call being handled (in detached work: of the call that began
    it; "" outside both)."""
    current = _inbound.get()
    return _carried.get()[0] if current is None else current.correlation_id


def detached() -> contextvars.Context:
    """A copy of the current context without the call being handled, for work that outlives
    the call: `loop.create_task(work, context=propagation.detached())`.

    Work run in it is not bound by the call's deadline, cancellation or identity (its calls
    carry no deadline of the call's, and not the caller's token, subject or claims), but it
    keeps the call's trace context (its spans join the call's trace), its correlation id (in
    its log lines and on its outgoing calls) and its service as the calling service.
    """
    current = _inbound.get()
    carried = _carried.get() if current is None else (current.correlation_id, current.service)
    context = contextvars.copy_context()
    context.run(_detach, carried)
    return context


def _detach(carried: tuple[str, str]) -> None:
    _inbound.set(None)
    _carried.set(carried)


def remaining() -> float | None:
    """Seconds left of the inbound call's deadline; None outside a call or without a deadline."""
    current = _inbound.get()
    return None if current is None else current.remaining()


def outbound_metadata(
    metadata: Sequence[tuple[str, str | bytes]] | None,
) -> list[tuple[str, str | bytes]]:
    """The caller's metadata plus correlation id, trace context and caller identity."""
    result = list(metadata or ())
    current = _inbound.get()
    if current is None:  # not handling a call: only the correlation id may be missing
        correlation, service = _carried.get()
        present = {key for key, _ in result}
        if CORRELATION_HEADER not in present:
            result.append((CORRELATION_HEADER, correlation or new_id()))
        if service and CALLER not in present:  # detached work of a call's service
            result.append((CALLER, service))
        return result
    present = {key for key, _ in result}
    if CORRELATION_HEADER not in present:
        result.append((CORRELATION_HEADER, current.correlation_id))
    result.extend((k, v) for k, v in passed_on(current) if k not in present)
    if CALLER not in present:
        result.append((CALLER, current.service))
    return result
