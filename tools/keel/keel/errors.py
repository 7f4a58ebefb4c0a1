"""Errors a service method raises to end its call with a gRPC status.

`raise keel.errors.NotFound("order 42 does not exist")` ends the call with NOT_FOUND and that
message; `raise keel.errors.InvalidArgument("bad order", field_violations={"lines[0].quantity":
"must be > 0"})` adds a google.rpc.BadRequest detail.
There is one class per gRPC status code except OK.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import ClassVar, NamedTuple

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

__all__ = [
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
]


class FieldViolation(NamedTuple):
    """One bad field of a request: its path (`lines[0].quantity`), the problem, a reason id."""

    field: str
    description: str
    reason: str = ""


class KeelError(Exception):
    """Base of the status errors; `code` is the gRPC status the call ends with.

    Keyword details become `google.rpc` details in the `grpc-status-details-bin` trailer:
    `field_violations` ({field path: description}) → BadRequest, `reason` (with `domain` and
    `metadata`) → ErrorInfo, `retry_after` (seconds) → RetryInfo.
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str = "",
        *,
        field_violations: Mapping[str, str] | Sequence[FieldViolation] | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if isinstance(field_violations, Mapping):
            field_violations = [FieldViolation(f, d) for f, d in field_violations.items()]
        self.field_violations = list(field_violations or ())
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after

    def details(self) -> list[Message]:
        """The google.rpc detail messages this error carries."""
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
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        for detail in self.details():
            status.details.add().Pack(detail)
        return status


class Cancelled(KeelError):
    code = grpc.StatusCode.CANCELLED


class Unknown(KeelError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(KeelError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(KeelError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(KeelError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(KeelError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(KeelError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(KeelError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(KeelError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(KeelError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(KeelError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(KeelError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(KeelError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(KeelError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(KeelError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(KeelError):
    code = grpc.StatusCode.UNAUTHENTICATED
