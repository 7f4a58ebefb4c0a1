"""The correlation id of the call being handled (`x-request-id`), as a context variable."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from contextvars import ContextVar

HEADER = "x-request-id"

_current: ContextVar[str] = ContextVar("keel_correlation_id", default="")


def current() -> str:
    """The id of the call this code runs for ("" outside a call)."""
    return _current.get()


def new_id() -> str:
    """A fresh correlation id."""
    return uuid.uuid4().hex


def from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The caller's `x-request-id`, or a new id if it sent none (or an unusable one)."""
    for key, value in metadata or ():
        if key == HEADER and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return new_id()


def bind(correlation_id: str) -> None:
    """Make `correlation_id` current for the rest of this task."""
    _current.set(correlation_id)
