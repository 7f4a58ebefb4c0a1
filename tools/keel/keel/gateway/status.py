"""gRPC status → HTTP: the mapping in google/rpc/code.proto, as grpc-gateway applies it.

Error bodies are `google.rpc.Status` as proto3 JSON. Every `google.rpc` detail type is known
here (they are imported below, whatever the process imported before), and so is every message
type of the generated code the gateway serves; a detail of a type this process does not know
is still rendered, as its type URL and base64 bytes, never a failed response.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2, json_format
from google.protobuf.descriptor import Descriptor

# Imported for their side effect: the detail types they declare become known to json_format.
from google.rpc import code_pb2, error_details_pb2, http_pb2, status_pb2  # noqa: F401
from google.rpc.context import attribute_context_pb2, audit_context_pb2  # noqa: F401

from keel.gateway import fieldpaths

_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"

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


def body(code: grpc.StatusCode, message: str, details: Sequence[Any] = ()) -> bytes:
    """The JSON error body: google.rpc.Status (`code`, `message`, `details` with `@type`).

    `details` are messages (packed and rendered as proto3 JSON) or ready JSON objects.
    """
    rendered = [
        detail if isinstance(detail, dict) else render_detail(_pack(detail)) for detail in details
    ]
    return json.dumps({"code": code.value[0], "message": message, "details": rendered}).encode()


def from_status(status: status_pb2.Status, request: Descriptor | None = None) -> bytes:
    """The JSON error body for a google.rpc.Status read from the trailers. With the `request`
    message's type, a BadRequest's field paths are in the JSON client's terms (each field's
    JSON name, keel.gateway.fieldpaths), in Keel's validation message too."""
    details = [render_detail(detail) for detail in status.details]
    message = status.message
    if request is not None:
        message = _in_json_terms(request, message, details)
    return json.dumps({"code": status.code, "message": message, "details": details}).encode()


def _in_json_terms(request: Descriptor, message: str, details: list[dict[str, Any]]) -> str:
    """Rename the BadRequest field paths among `details` (in place); the message too when it
    is those violations listed ("<field>: <why>; ...", as keel.runtime.validation's "invalid
    <type>: <field>: <why>; ..." and services that list them write it)."""
    violations = [
        violation
        for detail in details
        if detail.get("@type") == _BAD_REQUEST
        for violation in detail.get("fieldViolations", ())
    ]
    if not violations:
        return message
    described = [(str(v.get("field", "")), str(v.get("description", ""))) for v in violations]
    for violation in violations:
        if violation.get("field"):
            violation["field"] = fieldpaths.json_path(request, str(violation["field"]))
    name = request.full_name
    said = "; ".join(f"{field or name}: {why}" for field, why in described)
    prefix = f"invalid {name}: "
    if message not in (said, prefix + said):
        return message
    renamed = (str(v.get("field", "")) for v in violations)
    listed = "; ".join(
        f"{field or name}: {why}" for field, (_, why) in zip(renamed, described, strict=True)
    )
    return listed if message == said else prefix + listed


def render_detail(detail: any_pb2.Any) -> dict[str, Any]:
    """One detail as proto3 JSON; a type this process cannot resolve keeps its bytes (base64)."""
    try:
        rendered: dict[str, Any] = json_format.MessageToDict(detail)
    except (TypeError, KeyError, json_format.Error):
        return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}
    return rendered


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def bad_request(message: str, violations: Sequence[tuple[str, str]]) -> bytes:
    """A 400 body: INVALID_ARGUMENT with a google.rpc.BadRequest naming each bad field."""
    fields = [
        error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
        for field, description in violations
        if field
    ]
    details = [error_details_pb2.BadRequest(field_violations=fields)] if fields else []
    return body(grpc.StatusCode.INVALID_ARGUMENT, message, details)
