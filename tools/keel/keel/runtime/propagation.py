"""What travels from a call being handled to every call it makes.

Inside a handler, the inbound call's deadline, correlation id, W3C trace context and caller
identity are bound here; generated clients read them for outgoing calls, so deadlines shrink
along a chain of calls and one id follows a request through every service.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from keel.runtime import correlation, tracing

TRACE_CONTEXT = ("traceparent", "tracestate")
PROPAGATED = (*TRACE_CONTEXT, "x-keel-subject")
"""Inbound metadata copied to outbound calls as is (x-request-id is handled separately)."""
CALLER = "x-keel-caller"
"""Outbound metadata naming the calling service (the full name of the service handling)."""


@dataclass(frozen=True)
class Inbound:
    """The call being handled: its service, deadline (monotonic seconds) and metadata to pass on."""

    service: str
    deadline: float | None
    metadata: tuple[tuple[str, str], ...]


_inbound: ContextVar[Inbound | None] = ContextVar("keel_inbound", default=None)


def bind(
    service: str,
    time_remaining: float | None,
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> None:
    """Record the call being handled (called by the server for every call)."""
    passed = tuple(
        (key, value)
        for key, value in metadata or ()
        if key in PROPAGATED and isinstance(value, str)
    )
    deadline = None if time_remaining is None else time.monotonic() + time_remaining
    _inbound.set(Inbound(service, deadline, passed))
    correlation.bind(correlation.from_metadata(metadata))


def remaining() -> float | None:
    """Seconds left of the inbound call's deadline; None outside a call or without a deadline."""
    inbound = _inbound.get()
    if inbound is None or inbound.deadline is None:
        return None
    return inbound.deadline - time.monotonic()


def outbound_metadata(
    metadata: Sequence[tuple[str, str | bytes]] | None,
) -> list[tuple[str, str | bytes]]:
    """The caller's metadata plus correlation id, trace context and caller identity."""
    result = list(metadata or ())
    present = {key for key, _ in result}
    if correlation.HEADER not in present:
        result.append((correlation.HEADER, correlation.current() or correlation.new_id()))
    inbound = _inbound.get()
    if inbound is not None:
        # With tracing on, the client interceptor writes trace context for the new span.
        skip = TRACE_CONTEXT if tracing.enabled() else ()
        result.extend((k, v) for k, v in inbound.metadata if k not in present and k not in skip)
        if CALLER not in present:
            result.append((CALLER, inbound.service))
    return result
