"""Event ids: `keel.data.new_id("evt")`, sortable by creation time, never repeating across
restarts, workers and replicas, and increasing within a process (the relay publishes in id
order; transactions that overlap may still commit out of it)."""

from __future__ import annotations

from keel.data.ids import id_time_ms, new_id

PREFIX = "evt"


def new_event_id() -> str:
    """A new event id: `evt_` and 26 Crockford base32 characters (a ULID)."""
    return new_id(PREFIX)


def millis_of(event_id: str) -> int:
    """The creation time (Unix milliseconds) of an event id."""
    return id_time_ms(event_id)
