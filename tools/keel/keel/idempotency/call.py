"""One keyed call: the first time it runs and its outcome is stored in the transaction of its
effects; a repeat with the same key gets that outcome back and does nothing.

    async with keel.idempotency.call(db, context, request, Receipt) as call:
        if call.replay is not None:
            return call.replay
        call.session.add(Payment(...))          # the call's effects, in call.session
        return call.respond(Receipt(id=...))    # stored in the same transaction

A stored final error (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION,
OUT_OF_RANGE) is raised again on entry; any other error stores nothing, so a retry runs again.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2
from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from keel import errors
from keel.data import Database
from keel.idempotency.tables import idempotency as table
from keel.runtime import config
from keel.runtime.channels import IDEMPOTENCY_KEY as METADATA_KEY

__all__ = ["FINAL_CODES", "METADATA_KEY", "Call", "call", "key_of", "purge", "request_hash"]

MAX_KEY_LENGTH = 255
FINAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
"""Errors stored as a keyed call's outcome (a repeat raises them again); others are not."""

Response = TypeVar("Response", bound=Message)

_THIS_KEY = (table.c.key == bindparam("k"), table.c.method == bindparam("m"))
# built once: a statement built per call costs its construction and cache key each time
_FIND = select(table.c.request_hash, table.c.code, table.c.outcome, table.c.expires_at).where(
    *_THIS_KEY
)
_FORGET = delete(table).where(*_THIS_KEY)
_CLAIM = table.insert()
_RESPOND = (
    table.update().where(*_THIS_KEY).values(code=bindparam("code"), outcome=bindparam("outcome"))
)


def key_of(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The idempotency key in call metadata, or None (INVALID_ARGUMENT if malformed)."""
    for name, value in metadata or ():
        if name != METADATA_KEY:
            continue
        if not isinstance(value, str) or not 0 < len(value) <= MAX_KEY_LENGTH:
            raise errors.InvalidArgument(
                f"metadata {METADATA_KEY} must be 1 to {MAX_KEY_LENGTH} characters",
                reason="MALFORMED_METADATA",
                domain="keel",
                metadata={"key": METADATA_KEY},
            )
        return value
    return None


def request_hash(method: str, request: Message) -> str:
    """sha256 of the method and the request's deterministic serialization."""
    digest = hashlib.sha256(method.encode())
    digest.update(b"\0")
    digest.update(request.SerializeToString(deterministic=True))
    return digest.hexdigest()


@dataclass
class Call(Generic[Response]):
    """A keyed call in progress: its transaction, and the first call's response if a repeat."""

    session: AsyncSession
    """The transaction of the call's effects (committed with the stored response)."""
    key: str | None
    """The call's idempotency key (None: the call carries none and is not protected)."""
    replay: Response | None = None
    """The first call's response when this call repeats it (then do nothing and return it)."""
    _response: Response | None = field(default=None, repr=False)

    def respond(self, response: Response) -> Response:
        """Record `response` as the call's outcome (stored when the block ends) and return it."""
        self._response = response
        return response


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _aware(moment: datetime.datetime) -> datetime.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _reused(key: str, method: str) -> errors.KeelError:
    return errors.FailedPrecondition(
        f"idempotency key {key!r} was used for another request to {method}",
        reason="IDEMPOTENCY_KEY_REUSED",
        domain="keel",
        metadata={"key": key, "method": method},
    )


def _error(outcome: bytes) -> errors.KeelError:
    return errors.from_status(status_pb2.Status.FromString(outcome))


@asynccontextmanager
async def call(
    db: Database,
    context: Any,
    request: Message,
    response_type: type[Response],
    *,
    method: str | None = None,
    key: str | None = None,
) -> AsyncIterator[Call[Response]]:
    """Run a call at most once per idempotency key (see the module's docstring).

    `context`: the call's keel.Context (its `idempotency-key` metadata is the key) or None;
    `key`: a key given directly instead. `method`: the key's scope, by default the request's
    full message name. The same key with another request raises FAILED_PRECONDITION (reason
    IDEMPOTENCY_KEY_REUSED, the key in its metadata). Concurrent duplicates take turns: one
    runs, the others then replay its outcome. Keys expire after KEEL_IDEMPOTENCY_TTL.
    """
    if key is None and context is not None:
        key = key_of(context.invocation_metadata())
    if key is None:
        async with db.transaction() as session:
            yield Call(session, None)
        return
    scope = method or request.DESCRIPTOR.full_name
    digest = request_hash(scope, request)
    ttl = datetime.timedelta(seconds=config.current().idempotency_ttl)
    entered = False
    failed: errors.KeelError | None = None
    for _ in range(3):  # a concurrent first call's insert wins: read its outcome again
        try:
            async with db.transaction() as session:
                now = _now()
                found = (await session.execute(_FIND, {"k": key, "m": scope})).one_or_none()
                if found is not None and _aware(found.expires_at) > now:
                    if found.request_hash != digest:
                        raise _reused(key, scope)
                    if found.code != 0:
                        raise _error(found.outcome)
                    entered = True
                    yield Call(session, key, response_type.FromString(found.outcome))
                    return
                if found is not None:
                    await session.execute(_FORGET, {"k": key, "m": scope})
                row = {"key": key, "method": scope, "request_hash": digest, "code": -1}
                await session.execute(
                    _CLAIM, {**row, "outcome": b"", "created_at": now, "expires_at": now + ttl}
                )  # claims the key: a concurrent duplicate waits here (or at BEGIN on SQLite)
                entered = True
                current: Call[Response] = Call(session, key)
                try:
                    yield current
                except errors.KeelError as error:
                    failed = error
                    raise
                if current._response is None:
                    raise RuntimeError("a keyed call ended without call.respond(response)")
                outcome = current._response.SerializeToString()
                await session.execute(
                    _RESPOND, {"k": key, "m": scope, "code": 0, "outcome": outcome}
                )
                return
        except IntegrityError:
            if entered:
                raise
        except errors.KeelError as error:
            if error is failed and error.code() in FINAL_CODES:  # its effects rolled back
                await _store_error(db, row, error, now, ttl)
            raise
    raise errors.Aborted(f"idempotency key {key!r} is in use by a concurrent call; retry")


async def _store_error(
    db: Database,
    row: dict[str, Any],
    error: errors.KeelError,
    now: datetime.datetime,
    ttl: datetime.timedelta,
) -> None:
    """Record a final error as the key's outcome, unless another call took the key meanwhile."""
    values = {
        **row,
        "code": error.code().value[0],
        "outcome": error.to_status().SerializeToString(),
    }
    try:
        async with db.transaction() as session:
            await session.execute(_CLAIM, {**values, "created_at": now, "expires_at": now + ttl})
    except IntegrityError:
        pass


async def purge(db: Database) -> int:
    """Delete expired keys; returns how many."""
    async with db.transaction() as session:
        result = await session.execute(delete(table).where(table.c.expires_at <= _now()))
    return int(getattr(result, "rowcount", 0) or 0)
