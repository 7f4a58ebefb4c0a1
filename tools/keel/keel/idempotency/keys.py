"""Making idempotency keys."""

from __future__ import annotations

import uuid


def new_key() -> str:
    """A fresh random idempotency key (a UUID4, as the IETF draft suggests)."""
    return str(uuid.uuid4())
