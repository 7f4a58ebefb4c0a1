"""`keel.Context`: the call being handled, as a service method sees it.

It is grpc.aio's servicer context (every method of `grpc.aio.ServicerContext` works as usual)
plus what Keel knows about the call: its correlation id, the end user the edge verified, and
the Keel service that made the call. The server makes one per call; propagation keeps it as
the call being handled, so the same object serves both.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import grpc
import grpc.aio

from keel.errors import InvalidArgument

CORRELATION_HEADER = "x-request-id"
SUBJECT_HEADER = "x-keel-subject"
"""The end user (the token's `sub`) the edge verified."""
CLAIMS_HEADER = "x-keel-claims"
"""The verified token's claims, as a JSON object."""
CALLER_HEADER = "x-keel-caller"
"""The full name of the Keel service that made the call."""
AUTHORIZATION_HEADER = "authorization"
"""The end user's bearer token, which the edge verified and every service verifies again."""

Metadata = Iterable[tuple[str, str | bytes]]


def new_id() -> str:
    """A fresh correlation id (128 random bits, hex).

    From `random`, not `os.urandom`: an id is no secret, and urandom's system call lets grpc's
    poller thread take the GIL mid-call, which cost a loaded server several times the call.
    (`random` is reseeded in forked workers, so their ids do not repeat each other's.)
    """
    return _random_bits(128).to_bytes(16).hex()


_random_bits = random.getrandbits  # (the module's generator, which forked workers reseed)


def correlation_from(metadata: Metadata | None) -> str:
    """The caller's `x-request-id`, or a new id if it sent none (or an unusable one)."""
    for key, value in metadata or ():
        if key == CORRELATION_HEADER and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return new_id()


class CallContext(Protocol):
    """What Keel reads from a server's call context (grpc.aio's ServicerContext has it)."""

    def time_remaining(self) -> float | None: ...

    def invocation_metadata(self) -> Any: ...


def _malformed(key: str, problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"metadata {key} {problem}",
        reason="MALFORMED_METADATA",
        domain="keel",
        metadata={"key": key},
    )


if TYPE_CHECKING:
    _ServicerContext = grpc.aio.ServicerContext[Any, Any]
else:  # a virtual subclass (registered below): the real base gives each call an instance dict
    _ServicerContext = object


class Context(_ServicerContext):
    """The call being handled: grpc.aio's servicer context, plus Keel's view of the call.

        async def get_order(self, request, context: keel.Context):
            log.info("order asked", user=context.subject, correlation_id=context.correlation_id)
            if "orders.read" not in context.claims.get("scope", "").split():
                raise keel.errors.PermissionDenied("orders.read is needed")

    `subject` and `claims` are the end user's: the `sub` and claims of the bearer token the
    gateway verified and forwarded. With keys configured (KEEL_JWT_SECRET or a JWKS) the
    service verifies that token on every call and they come from it alone; the token travels
    on to every call made while handling this one. Without keys (development) nothing is
    verified and they are read from the `x-keel-subject` / `x-keel-claims` metadata as sent.
    """

    __slots__ = ("_claims", "_context", "_correlation_id", "_metadata", "_verified", "service")

    def __init__(self, service: str, context: CallContext, metadata: Metadata | None = None):
        self.service = service
        """The full name of the service handling the call."""
        self._context: Any = context
        self._metadata = None if metadata is None else tuple(metadata)
        self._correlation_id = ""
        self._claims: Mapping[str, Any] | None = None
        self._verified = False

    def adopt_caller(self, claims: Mapping[str, Any]) -> None:
        """Set the caller from the claims of a token verified for this call; `subject` and
        `claims` then come from them alone."""
        self._verified = True
        self._claims = claims

    @property
    def metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """The call's metadata, as (key, value) pairs."""
        if self._metadata is None:
            self._metadata = tuple(self._context.invocation_metadata() or ())
        return self._metadata

    def _text(self, key: str) -> str | None:
        for found, value in self.metadata:
            if found == key and isinstance(value, str):
                return value
        return None

    @property
    def correlation_id(self) -> str:
        """The caller's `x-request-id`, or an id made here; in every log line of the call and
        sent on with every call made while handling it."""
        if not self._correlation_id:
            self._correlation_id = correlation_from(self.metadata)
        return self._correlation_id

    @property
    def verified(self) -> bool:
        """Whether `subject` and `claims` come from a bearer token this service verified (False
        without keys: development, where they are the metadata as sent, proving nothing)."""
        return self._verified

    @property
    def subject(self) -> str | None:
        """The verified end user (`sub`), or None if the call carries none."""
        if self._verified and self._claims is not None:
            sub = self._claims.get("sub")
            return None if sub is None else str(sub)
        return self._text(SUBJECT_HEADER)

    @property
    def claims(self) -> Mapping[str, Any]:
        """The verified end user's token claims ({} if the call carries none).

        Claims that are not a JSON object end the call with INVALID_ARGUMENT (ErrorInfo
        reason MALFORMED_METADATA) when read.
        """
        if self._claims is None:
            text = self._text(CLAIMS_HEADER)
            if text is None:
                self._claims = {}
            else:
                try:
                    claims = json.loads(text)
                except ValueError:
                    raise _malformed(CLAIMS_HEADER, "is not JSON") from None
                if not isinstance(claims, dict):
                    raise _malformed(CLAIMS_HEADER, "is not a JSON object")
                self._claims = claims
        return self._claims

    @property
    def calling_service(self) -> str:
        """The full name of the Keel service that made this call ("" if not one)."""
        return self._text(CALLER_HEADER) or ""

    def remaining(self) -> float | None:
        """Seconds left before the call's deadline; None if it has none."""
        left: float | None = self._context.time_remaining()
        return left

    # grpc.aio.ServicerContext, delegated to grpc's own context of the call.

    async def read(self) -> Any:
        return await self._context.read()

    async def write(self, message: Any) -> None:
        await self._context.write(message)

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        await self._context.send_initial_metadata(initial_metadata)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        await self._context.abort(code, details, trailing_metadata)
        raise AssertionError("abort returned")  # pragma: no cover (grpc raises AbortError)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self._context.abort_with_status(status)
        raise AssertionError("abort returned")  # pragma: no cover

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._context.set_trailing_metadata(trailing_metadata)

    def invocation_metadata(self) -> grpc.aio.Metadata | None:
        found: grpc.aio.Metadata | None = self._context.invocation_metadata()
        return found

    def set_code(self, code: grpc.StatusCode) -> None:
        self._context.set_code(code)

    def set_details(self, details: str) -> None:
        self._context.set_details(details)

    def set_compression(self, compression: grpc.Compression) -> None:
        self._context.set_compression(compression)

    def disable_next_message_compression(self) -> None:
        self._context.disable_next_message_compression()

    def peer(self) -> str:
        peer: str = self._context.peer()
        return peer

    def peer_identities(self) -> Iterable[bytes] | None:
        found: Iterable[bytes] | None = self._context.peer_identities()
        return found

    def peer_identity_key(self) -> str | None:
        found: str | None = self._context.peer_identity_key()
        return found

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        found: Mapping[str, Iterable[bytes]] = self._context.auth_context()
        return found

    def time_remaining(self) -> float:
        left: float = self._context.time_remaining()
        return left

    def trailing_metadata(self) -> Any:
        return self._context.trailing_metadata()

    def code(self) -> Any:
        return self._context.code()

    def details(self) -> Any:
        return self._context.details()

    def add_done_callback(self, callback: Any) -> None:
        self._context.add_done_callback(callback)

    def cancelled(self) -> bool:
        cancelled: bool = self._context.cancelled()
        return cancelled

    def done(self) -> bool:
        done: bool = self._context.done()
        return done


grpc.aio.ServicerContext.register(Context)
