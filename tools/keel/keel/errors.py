"""Errors a service method raises to end its call with a gRPC status.

`raise keel.errors.NotFound("order 42 does not exist")` ends the call with NOT_FOUND and that
message.
There is one class per gRPC status code except OK.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
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


class KeelError(Exception):
    """Base of the status errors; `code` is the gRPC status the call ends with."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


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
