"""Idempotency keys: a mutating call carrying a key has its effect once, however often it comes.

    async with keel.idempotency.call(db, context, request, Receipt) as call:
        if call.replay is not None:
            return call.replay
        ...effects in call.session...
        return call.respond(Receipt(...))

The key travels as `idempotency-key` gRPC metadata (the gateway's `Idempotency-Key` header);
generated clients attach a fresh one to methods marked `(keel.options.v1.method) =
{idempotency_key: true}` and reuse it on their retries. The service keeps keys in its own
database: `keel.idempotency.tables.add_to(metadata)` for its migrations. See docs/sagas.md.
"""

from __future__ import annotations

from keel.idempotency import tables
from keel.idempotency.call import (
    FINAL_CODES,
    METADATA_KEY,
    Call,
    call,
    key_of,
    purge,
    request_hash,
)
from keel.idempotency.keys import new_key

__all__ = [
    "FINAL_CODES",
    "METADATA_KEY",
    "Call",
    "call",
    "key_of",
    "new_key",
    "purge",
    "request_hash",
    "tables",
]
