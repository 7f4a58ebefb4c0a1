"""HTTP request → request message, response message → JSON, per the matched HttpRule.

proto3 canonical JSON both ways (protobuf's json_format): fields by JSON name or proto name in,
camelCase out, int64 as strings, enums by name (or number in the query string). Anything that
does not fit the message is a `BadInputError` naming the field.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from keel.gateway.routes import Match


class BadInputError(Exception):
    """The request cannot become the method's request message; the message says why."""


def _field(message: Descriptor, name: str) -> FieldDescriptor | None:
    return message.fields_by_name.get(name) or next(
        (f for f in message.fields if f.json_name == name), None
    )


def _set(data: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        child = data.setdefault(part, {})
        if not isinstance(child, dict):
            raise BadInputError(f"{'.'.join(path)}: {part} is not a message")
        data = child
    data[path[-1]] = value


def _query_value(field: FieldDescriptor, values: list[str]) -> Any:
    def one(value: str) -> Any:
        if field.type == FieldDescriptor.TYPE_ENUM and value.lstrip("-").isdigit():
            return int(value)
        if field.type == FieldDescriptor.TYPE_BOOL:
            return {"true": True, "false": False}.get(value.lower(), value)
        return value

    return [one(v) for v in values] if field.is_repeated else one(values[-1])


def _query(message: Descriptor, query: str, data: dict[str, Any], bound: set[str]) -> None:
    grouped: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        grouped.setdefault(key, []).append(value)
    for key, values in grouped.items():
        path = key.split(".")
        descriptor: Descriptor | None = message
        field: FieldDescriptor | None = None
        for part in path:
            field = _field(descriptor, part) if descriptor is not None else None
            if field is None:
                raise BadInputError(
                    f"query parameter {key!r}: no such field in {message.full_name}"
                )
            descriptor = field.message_type
        if field is None or key in bound:
            continue
        if field.message_type is not None and not field.message_type.full_name.startswith(
            "google.protobuf."
        ):
            raise BadInputError(f"query parameter {key!r}: {field.name} is a message, not a value")
        _set(data, path, _query_value(field, values))


def _mask_paths(descriptor: Descriptor, value: dict[str, Any], prefix: str) -> list[str]:
    """FieldMask paths (in JSON's camelCase form) of the keys set in a JSON object."""
    paths = []
    for key, item in value.items():
        field = _field(descriptor, key)
        if field is None:
            continue  # ParseDict reports the unknown field
        path = f"{prefix}{field.json_name}"
        nested = field.message_type
        if (
            nested is not None
            and not nested.GetOptions().map_entry
            and not nested.full_name.startswith("google.protobuf.")
            and not field.is_repeated
            and isinstance(item, dict)
            and item
        ):
            paths += _mask_paths(nested, item, f"{path}.")
        else:
            paths.append(path)
    return paths


def _fill_update_mask(
    match: Match, descriptor: Descriptor, data: dict[str, Any], query: str
) -> None:
    """PATCH without an `update_mask`: the mask is the body's keys (as grpc-gateway does)."""
    rule = match.route.rule
    mask = descriptor.fields_by_name.get("update_mask")
    if (
        match.route.verb != "PATCH"
        or rule.body in ("", "*")
        or mask is None
        or mask.message_type is None
        or mask.message_type.full_name != "google.protobuf.FieldMask"
        or {key for key, _ in parse_qsl(query)} & {"update_mask", "updateMask"}
    ):
        return
    body = data.get(rule.body)
    target = descriptor.fields_by_name[rule.body].message_type
    if isinstance(body, dict) and target is not None:
        data["update_mask"] = ",".join(_mask_paths(target, body, ""))


HTTP_BODY = "google.api.HttpBody"


def _raw_body_target(match: Match, message: Message) -> Message | None:
    """The google.api.HttpBody the raw request body goes into, if the rule has one."""
    body_field = match.route.rule.body
    if body_field == "*" and message.DESCRIPTOR.full_name == HTTP_BODY:
        return message
    if body_field not in ("", "*"):
        field = message.DESCRIPTOR.fields_by_name[body_field]
        if field.message_type is not None and field.message_type.full_name == HTTP_BODY:
            target: Message = getattr(message, body_field)
            return target
    return None


def request_message(match: Match, query: str, body: bytes, content_type: str = "") -> Message:
    """The request message for a matched route (path variables, query string, body).

    A body bound to a `google.api.HttpBody` is taken as is, with its content type.
    """
    route = match.route
    if route.strings_only and not query:  # the common GET: no JSON to parse
        simple: Message = route.method.request_type(**match.variables)
        return simple
    message = route.method.request_type()
    data: dict[str, Any] = {}
    body_field = route.rule.body
    raw_target = _raw_body_target(match, message)
    if raw_target is not None:
        body_field = ""  # the body is not JSON; path and query still bind the other fields
    if body_field:
        try:
            parsed = json.loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as error:
            raise BadInputError(f"the body is not valid JSON: {error}") from None
        if body_field == "*":
            if not isinstance(parsed, dict):
                raise BadInputError("the body must be a JSON object")
            data = parsed
        else:
            data[body_field] = parsed
            _fill_update_mask(match, message.DESCRIPTOR, data, query)
    if body_field != "*":
        _query(message.DESCRIPTOR, query, data, set(match.variables))
    for name, value in match.variables.items():
        _set(data, name.split("."), value)
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as error:
        raise BadInputError(str(error)) from None
    raw_target = _raw_body_target(match, message)
    if raw_target is not None:
        raw_target.content_type = content_type  # type: ignore[attr-defined]
        raw_target.data = body  # type: ignore[attr-defined]
    built: Message = message
    return built


def raw_response(match: Match, response: Message) -> tuple[str, bytes] | None:
    """(content type, bytes) when the response, or its response_body, is a google.api.HttpBody."""
    field_name = match.route.rule.response_body
    if field_name:
        field = response.DESCRIPTOR.fields_by_name[field_name]
        if field.is_repeated or field.message_type is None:
            return None
    target: Any = getattr(response, field_name) if field_name else response
    if target.DESCRIPTOR.full_name != HTTP_BODY:
        return None
    return target.content_type or "application/octet-stream", bytes(target.data)


def response_body(match: Match, response: Message) -> bytes:
    """The JSON of the response, or of its `response_body` field alone."""
    rendered: Any = json_format.MessageToDict(response)
    field_name = match.route.rule.response_body
    if field_name:
        field = response.DESCRIPTOR.fields_by_name[field_name]
        rendered = rendered.get(field.json_name, [] if field.is_repeated else None)
        if rendered is None:
            rendered = json_format.MessageToDict(getattr(response, field_name))
    return json.dumps(rendered, separators=(",", ":")).encode()
