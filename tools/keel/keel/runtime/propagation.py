"""What travels from a call being handled to every call it makes.

The server binds the inbound call (its service, deadline and metadata) in a context variable;
generated clients read it for outgoing calls, so deadlines shrink along a chain of calls and one
correlation id follows a request through every service. Everything derived from the metadata
(the correlation id, the headers to pass on) is computed on first use: a call that logs nothing
and calls no one pays only for binding.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from typing import Any, Protocol

from keel.runtime import tracing

CORRELATION_HEADER = "x-request-id"
TRACE_CONTEXT = ("traceparent", "tracestate")
PROPAGATED = (*TRACE_CONTEXT, "x-keel-subject")
"""Inbound metadata copied to outbound calls as is."""
CALLER = "x-keel-caller"
"""Outbound metadata naming the calling service (the full name of the service handling)."""

Metadata = Iterable[tuple[str, str | bytes]]


def new_id() -> str:
    """A fresh correlation id (128 random bits, hex).

    From `random`, not `os.urandom`: an id is no secret, and urandom's system call lets grpc's
    poller thread take the GIL mid-call, which cost a loaded server several times the call.
    (`random` is reseeded in forked workers, so their ids do not repeat each other's.)
    """
    return random.getrandbits(128).to_bytes(16, "big").hex()


def correlation_from(metadata: Metadata | None) -> str:
    """The caller's `x-request-id`, or a new id if it sent none (or an unusable one)."""
    for key, value in metadata or ():
        if key == CORRELATION_HEADER and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return new_id()


class CallContext(Protocol):
    """What the server's call context offers propagation (grpc.aio's ServicerContext does)."""

    def time_remaining(self) -> float | None: ...

    def invocation_metadata(self) -> Any: ...


class Inbound:
    """The call being handled: its service; its metadata and deadline read when first needed."""

    __slots__ = ("_context", "_correlation_id", "_metadata", "service")

    def __init__(self, service: str, context: CallContext, metadata: Metadata | None = None):
        self.service = service
        self._context = context
        self._metadata = None if metadata is None else tuple(metadata)
        self._correlation_id = ""

    @property
    def metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        if self._metadata is None:
            self._metadata = tuple(self._context.invocation_metadata() or ())
        return self._metadata

    def remaining(self) -> float | None:
        """Seconds left before the call's deadline; None if it has none."""
        return self._context.time_remaining()

    @property
    def correlation_id(self) -> str:
        if not self._correlation_id:
            self._correlation_id = correlation_from(self.metadata)
        return self._correlation_id

    def passed_on(self) -> list[tuple[str, str]]:
        """Inbound metadata to copy to outbound calls (trace context only when not tracing)."""
        skip = TRACE_CONTEXT if tracing.enabled() else ()
        return [
            (key, value)
            for key, value in self.metadata
            if key in PROPAGATED and key not in skip and isinstance(value, str)
        ]


_inbound: ContextVar[Inbound | None] = ContextVar("keel_inbound", default=None)


def bind(service: str, context: CallContext, metadata: Metadata | None = None) -> None:
    """Record the call being handled (the server does this for every call); `metadata` if the
    caller already read it from `context`."""
    _inbound.set(Inbound(service, context, metadata))


def inbound() -> Inbound | None:
    """The call being handled, if any."""
    return _inbound.get()


def correlation_id() -> str:
    """The correlation id of the call being handled ("" outside a call)."""
    current = _inbound.get()
    return "" if current is None else current.correlation_id


def remaining() -> float | None:
    """Seconds left of the inbound call's deadline; None outside a call or without a deadline."""
    current = _inbound.get()
    return None if current is None else current.remaining()


def outbound_metadata(
    metadata: Sequence[tuple[str, str | bytes]] | None,
) -> list[tuple[str, str | bytes]]:
    """The caller's metadata plus correlation id, trace context and caller identity."""
    result = list(metadata or ())
    present = {key for key, _ in result}
    current = _inbound.get()
    if CORRELATION_HEADER not in present:
        result.append((CORRELATION_HEADER, current.correlation_id if current else new_id()))
    if current is not None:
        result.extend((k, v) for k, v in current.passed_on() if k not in present)
        if CALLER not in present:
            result.append((CALLER, current.service))
    return result
