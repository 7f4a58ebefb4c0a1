"""gRPC status → HTTP: the mapping in google/rpc/code.proto, as grpc-gateway applies it."""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import status_pb2

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


def body(code: grpc.StatusCode, message: str, details: list[Any] | None = None) -> bytes:
    """The JSON error body: google.rpc.Status (`code`, `message`, `details` with `@type`)."""
    return json.dumps(
        {"code": code.value[0], "message": message, "details": details or []}
    ).encode()


def from_status(status: status_pb2.Status) -> bytes:
    """The JSON error body for a google.rpc.Status read from the trailers."""
    rendered = json_format.MessageToDict(status)
    return json.dumps(
        {
            "code": status.code,
            "message": status.message,
            "details": rendered.get("details", []),
        }
    ).encode()
