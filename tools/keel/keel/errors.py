"""gRPC status errors: what a service method raises, and what a generated client raises.

`raise keel.errors.NotFound("order 42 does not exist")` ends the call with NOT_FOUND and that
message; `raise keel.errors.InvalidArgument("bad order", field_violations={"lines[0].quantity":
"must be > 0"})` adds a google.rpc.BadRequest detail. There is one class per gRPC status code
except OK.

A generated client raises the same classes for a failed call, with the google.rpc details it
received parsed back into attributes. Each is also a `grpc.aio.AioRpcError` (`.code()`,
`.details()`, `.trailing_metadata()` with `grpc-status-details-bin`), so code written against
grpc.aio keeps working, and a handler that re-raises one sends its status and details on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, NamedTuple, overload

import grpc
import grpc.aio
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "DETAILS_KEY",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "KeelError",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "from_rpc_error",
    "from_status",
]

DETAILS_KEY = "grpc-status-details-bin"
"""The trailer that carries the google.rpc.Status with the details."""


class FieldViolation(NamedTuple):
    """One bad field of a request: its path (`lines[0].quantity`), the problem, a reason id."""

    field: str
    description: str
    reason: str = ""


class StatusCodeOf:
    """A status class's code: `NotFound.code` is the `grpc.StatusCode`, and on an instance
    `error.code()` returns it, as on any `grpc.aio.AioRpcError`."""

    __slots__ = ("_call", "value")

    def __init__(self, code: grpc.StatusCode) -> None:
        self.value = code
        self._call: Callable[[], grpc.StatusCode] = lambda: code

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> grpc.StatusCode: ...

    @overload
    def __get__(
        self, obj: object, owner: type[Any] | None = None
    ) -> Callable[[], grpc.StatusCode]: ...

    def __get__(self, obj: object, owner: type[Any] | None = None) -> Any:
        return self.value if obj is None else self._call


class KeelError(grpc.aio.AioRpcError):
    """Base of the status errors; `Class.code` is the gRPC status the call ends with.

    Keyword details become `google.rpc` details in the `grpc-status-details-bin` trailer:
    `field_violations` ({field path: description}) → BadRequest, `reason` (with `domain` and
    `metadata`) → ErrorInfo, `retry_after` (seconds) → RetryInfo. `other_details` holds any
    other detail (a packed `google.protobuf.Any`) and travels on unchanged. The metadata and
    debug keywords are what a client received with the error (see `from_rpc_error`).
    """

    code = StatusCodeOf(grpc.StatusCode.UNKNOWN)  # NotFound.code / error.code()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        given = cls.__dict__.get("code")
        if isinstance(given, grpc.StatusCode):  # `code = grpc.StatusCode.X` in a subclass
            cls.code = StatusCodeOf(given)

    def __init__(
        self,
        message: str = "",
        *,
        field_violations: Mapping[str, str] | Sequence[FieldViolation] | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        other_details: Iterable[any_pb2.Any] = (),
        initial_metadata: grpc.aio.Metadata | None = None,
        trailing_metadata: grpc.aio.Metadata | None = None,
        debug_error_string: str | None = None,
    ) -> None:
        super().__init__(
            type(self).code,
            initial_metadata if initial_metadata is not None else grpc.aio.Metadata(),
            trailing_metadata,
            message,
            debug_error_string,
        )
        self.args = (message,)
        self._trailers = trailing_metadata
        self.message = message
        if isinstance(field_violations, Mapping):
            field_violations = [FieldViolation(f, d) for f, d in field_violations.items()]
        self.field_violations = list(field_violations or ())
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after
        self.other_details = list(other_details)

    def details(self) -> str:
        """The status message (grpc.aio.AioRpcError's name for it)."""
        return self.message

    def trailing_metadata(self) -> grpc.aio.Metadata:  # type: ignore[override]  # as AioRpcError
        """The trailers received with this error; for one raised here, the details trailer."""
        if self._trailers is not None:
            return self._trailers
        return grpc.aio.Metadata((DETAILS_KEY, self.to_status().SerializeToString()))

    def status_details(self) -> list[Message]:
        """The google.rpc detail messages of the attributes (other_details not included)."""
        found: list[Message] = []
        if self.field_violations:
            found.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description, reason=v.reason
                        )
                        for v in self.field_violations
                    ]
                )
            )
        if self.reason:
            found.append(
                error_details_pb2.ErrorInfo(
                    reason=self.reason, domain=self.domain, metadata=self.metadata
                )
            )
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromTimedelta(timedelta(seconds=self.retry_after))
            found.append(error_details_pb2.RetryInfo(retry_delay=delay))
        return found

    def to_status(self) -> status_pb2.Status:
        """This error as a google.rpc.Status."""
        status = status_pb2.Status(code=type(self).code.value[0], message=self.message)
        for detail in self.status_details():
            status.details.add().Pack(detail)
        status.details.extend(self.other_details)
        return status

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message,), self.__dict__)


class Cancelled(KeelError):
    code = StatusCodeOf(grpc.StatusCode.CANCELLED)


class Unknown(KeelError):
    code = StatusCodeOf(grpc.StatusCode.UNKNOWN)


class InvalidArgument(KeelError):
    code = StatusCodeOf(grpc.StatusCode.INVALID_ARGUMENT)


class DeadlineExceeded(KeelError):
    code = StatusCodeOf(grpc.StatusCode.DEADLINE_EXCEEDED)


class NotFound(KeelError):
    code = StatusCodeOf(grpc.StatusCode.NOT_FOUND)


class AlreadyExists(KeelError):
    code = StatusCodeOf(grpc.StatusCode.ALREADY_EXISTS)


class PermissionDenied(KeelError):
    code = StatusCodeOf(grpc.StatusCode.PERMISSION_DENIED)


class ResourceExhausted(KeelError):
    code = StatusCodeOf(grpc.StatusCode.RESOURCE_EXHAUSTED)


class FailedPrecondition(KeelError):
    code = StatusCodeOf(grpc.StatusCode.FAILED_PRECONDITION)


class Aborted(KeelError):
    code = StatusCodeOf(grpc.StatusCode.ABORTED)


class OutOfRange(KeelError):
    code = StatusCodeOf(grpc.StatusCode.OUT_OF_RANGE)


class Unimplemented(KeelError):
    code = StatusCodeOf(grpc.StatusCode.UNIMPLEMENTED)


class Internal(KeelError):
    code = StatusCodeOf(grpc.StatusCode.INTERNAL)


class Unavailable(KeelError):
    code = StatusCodeOf(grpc.StatusCode.UNAVAILABLE)


class DataLoss(KeelError):
    code = StatusCodeOf(grpc.StatusCode.DATA_LOSS)


class Unauthenticated(KeelError):
    code = StatusCodeOf(grpc.StatusCode.UNAUTHENTICATED)


BY_CODE: dict[grpc.StatusCode, type[KeelError]] = {
    cls.code: cls for cls in KeelError.__subclasses__() if cls.__module__ == __name__
}
"""The class of each status code (all but OK)."""


def _received_status(
    code: grpc.StatusCode, trailers: grpc.aio.Metadata | None
) -> status_pb2.Status | None:
    """The google.rpc.Status in the trailers, if it decodes and agrees with the call's code."""
    for key, value in trailers or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except DecodeError:
                return None
            return status if status.code == code.value[0] else None
    return None


def _unpack(detail: any_pb2.Any, message: Message) -> bool:
    try:
        return detail.Unpack(message)
    except DecodeError:
        return False


def _parse(details: Iterable[any_pb2.Any]) -> dict[str, Any]:
    """Constructor keywords from google.rpc details; kinds read once, the rest kept as is."""
    found: dict[str, Any] = {"field_violations": [], "other_details": []}
    for detail in details:
        bad, info, retry = (
            error_details_pb2.BadRequest(),
            error_details_pb2.ErrorInfo(),
            error_details_pb2.RetryInfo(),
        )
        if _unpack(detail, bad):
            found["field_violations"] += [
                FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations
            ]
        elif "reason" not in found and _unpack(detail, info) and info.reason:
            found.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
        elif "retry_after" not in found and _unpack(detail, retry):
            found["retry_after"] = retry.retry_delay.ToTimedelta().total_seconds()
        else:
            found["other_details"].append(detail)
    return found


def from_status(status: status_pb2.Status) -> KeelError:
    """The typed error a `google.rpc.Status` describes: its code's class, details parsed."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    return BY_CODE.get(code, Unknown)(status.message, **_parse(status.details))


def from_rpc_error(error: grpc.aio.AioRpcError) -> KeelError:
    """The typed error for a failed call: its code's class, with the google.rpc details from
    the `grpc-status-details-bin` trailer parsed into attributes (the trailers kept as sent)."""
    if isinstance(error, KeelError):
        return error
    code = error.code()
    trailers = error.trailing_metadata()
    status = _received_status(code, trailers)
    parsed = _parse(status.details) if status is not None else {}
    return BY_CODE.get(code, Unknown)(
        error.details() or "",
        **parsed,
        initial_metadata=error.initial_metadata(),
        trailing_metadata=trailers if trailers is not None else grpc.aio.Metadata(),
        debug_error_string=error.debug_error_string(),
    )
