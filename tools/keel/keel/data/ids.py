"""Ids that never repeat across restarts, worker processes and replicas, sortable by creation.

`new_id("o")` gives `o_01JD7X5W3M8Q2V0B6N4R9T1C2E`: the prefix, then 26 Crockford base32
characters of a 128-bit number, as a ULID: 48 bits of Unix time in milliseconds, then 80 bits
of randomness. Within one process, ids made in the same millisecond count up from a random
start (monotonic); a forked worker starts afresh, so it never continues its parent's count.
As strings (byte order, e.g. PostgreSQL's "C" collation, see `id_type`), ids sort by the
millisecond they were made in, and within a process by the order they were made in.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32: no I, L, O, U
_RANDOM_BITS = 80
_RANDOM_LIMIT = 1 << _RANDOM_BITS
_PREFIX = re.compile(r"[a-z][a-z0-9]{0,15}")
_lock = threading.Lock()
_last_ms = 0
_last_random = 0


def _reset() -> None:
    global _last_ms, _last_random
    _last_ms, _last_random = 0, 0


os.register_at_fork(after_in_child=_reset)


def _next() -> int:
    global _last_ms, _last_random  # noqa: PLW0603
    with _lock:
        now = time.time_ns() // 1_000_000
        if now > _last_ms:
            _last_ms, _last_random = now, secrets.randbits(_RANDOM_BITS)
        else:  # same millisecond, or the clock went back: count up from the last id
            _last_random += 1
            if _last_random >= _RANDOM_LIMIT:
                _last_ms, _last_random = _last_ms + 1, secrets.randbits(_RANDOM_BITS)
        return (_last_ms << _RANDOM_BITS) | _last_random


def encode(value: int) -> str:
    """A 128-bit number as 26 Crockford base32 characters (most significant first)."""
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str = "") -> str:
    """A new id, `prefix_` + 26 characters (or the 26 characters alone without a prefix).

    The prefix names the kind of thing (`o` for orders, `p` for products): a lower-case letter,
    then up to 15 lower-case letters or digits.
    """
    if prefix and not _PREFIX.fullmatch(prefix):
        raise ValueError(f"id prefix {prefix!r}: a lower-case letter, then letters or digits")
    body = encode(_next())
    return f"{prefix}_{body}" if prefix else body


def id_time_ms(identifier: str) -> int:
    """The Unix time in milliseconds an id was made at (its first 48 bits)."""
    body = identifier.rpartition("_")[2]
    value = 0
    for char in body[:10]:
        value = value * 32 + _ALPHABET.index(char)
    return value  # 10 characters hold 50 bits: 2 zero bits (26 x 5 = 130), then the 48 of time
