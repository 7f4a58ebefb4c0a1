"""Event ids: sortable by creation time, never repeating across restarts, workers and replicas.

An id is 128 bits: 48 bits of Unix time in milliseconds, then 80 random bits, written as 26
Crockford base32 characters after `evt_` (a ULID). Within one process ids are strictly
increasing: an id made in the same millisecond as the last one is the last one plus 1, so the
outbox relay publishes a process's events in the order they were made.
"""

from __future__ import annotations

import os
import random
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1
PREFIX = "evt_"

_lock = threading.Lock()
_last = 0


def _reset() -> None:
    global _last  # noqa: PLW0603 (per-process state, reset in a forked child)
    _last = 0


os.register_at_fork(after_in_child=_reset)


def encode(value: int) -> str:
    """`value` (128 bits) as 26 Crockford base32 characters, most significant first."""
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_event_id() -> str:
    """A new event id, `evt_` + 26 characters, greater than every id this process made before."""
    global _last  # noqa: PLW0603
    millis = time.time_ns() // 1_000_000
    with _lock:
        value = (millis << _RANDOM_BITS) | random.getrandbits(_RANDOM_BITS)
        if value <= _last:
            value = _last + 1
        _last = value
    return PREFIX + encode(value)


def millis_of(event_id: str) -> int:
    """The creation time (Unix milliseconds) in an id from `new_event_id`."""
    value = 0
    for char in event_id.removeprefix(PREFIX):
        value = value * 32 + _ALPHABET.index(char)
    return value >> _RANDOM_BITS
