"""HTTP request → request message, response message → JSON, per the matched HttpRule.

proto3 canonical JSON both ways (protobuf's json_format): fields by JSON name or proto name in,
camelCase out, int64 as strings, enums by name (or number in the query string). Anything that
does not fit the message is a `BadInputError` naming the field.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from keel.gateway import flat, protojson
from keel.gateway.protojson import InputError, Violation
from keel.gateway.routes import HTTP_BODY, Match

BadInputError = InputError
"""The request cannot become the method's request message; its violations name the fields."""


def _resolve(message: Descriptor, names: list[str]) -> list[FieldDescriptor] | None:
    """The fields along a dotted path (each part a proto or JSON name), None if one is missing."""
    fields: list[FieldDescriptor] = []
    descriptor: Descriptor | None = message
    for part in names:
        field = protojson.field_named(descriptor, part) if descriptor is not None else None
        if field is None:
            return None
        fields.append(field)
        descriptor = field.message_type
    return fields


def _paths(fields: list[FieldDescriptor]) -> tuple[str, str]:
    return ".".join(f.name for f in fields), ".".join(f.json_name for f in fields)


def _set(data: dict[str, Any], fields: list[FieldDescriptor], value: Any) -> None:
    for field in fields[:-1]:
        child = data.setdefault(field.name, {})
        if not isinstance(child, dict):
            proto, json_path = _paths(fields)
            raise InputError([Violation(proto, json_path, f"{field.name} is not an object")])
        data = child
    data[fields[-1].name] = value


def _overlaps(path: str, bound: str) -> bool:
    return path == bound or path.startswith(bound + ".") or bound.startswith(path + ".")


def _query(
    message: Descriptor, query: str, data: dict[str, Any], bound: dict[str, str]
) -> list[Violation]:
    """Bind the query string's parameters into `data`; the violations of the bad ones.

    `bound` maps the proto paths that the path or the body already set to which of the two.
    """
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        return [Violation("", "", "the query string is not UTF-8 (after percent-decoding)")]
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    problems: list[Violation] = []
    for key, values in grouped.items():
        fields = _resolve(message, key.split("."))
        if fields is None:
            problems.append(
                Violation(key, key, f"query parameter: no such field in {message.full_name}")
            )
            continue
        proto, json_path = _paths(fields)
        field = fields[-1]
        setter = next((where for path, where in bound.items() if _overlaps(proto, path)), None)
        if setter is not None:
            problems.append(
                Violation(proto, json_path, f"query parameter: already set by the {setter}")
            )
            continue
        if not field.is_repeated and len(values) > 1:
            problems.append(
                Violation(
                    proto, json_path, f"query parameter given {len(values)} times; takes one value"
                )
            )
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            problems.append(Violation(proto, json_path, "a map cannot be set in the query string"))
            continue
        try:
            converted = [protojson.from_text(field, v) for v in values]
        except ValueError as error:
            problems.append(Violation(proto, json_path, f"query parameter: {error}"))
            continue
        _set(data, fields, converted if field.is_repeated else converted[0])
    return problems


def _unwanted_query(message: Descriptor, query: str) -> list[Violation]:
    """Body "*" takes every field from the body: each query parameter would be dropped."""
    problems = []
    for key in dict.fromkeys(k for k, _ in parse_qsl(query, keep_blank_values=True)):
        fields = _resolve(message, key.split("."))
        proto, json_path = _paths(fields) if fields else (key, key)
        problems.append(
            Violation(
                proto, json_path, "query parameter: this method takes every field in the body"
            )
        )
    return problems


def _path_variables(
    message: Descriptor, variables: dict[str, str], data: dict[str, Any]
) -> list[Violation]:
    problems: list[Violation] = []
    for name, text in variables.items():
        fields = _resolve(message, name.split("."))
        if fields is None:  # the generator checked the template against the message
            raise LookupError(f"path variable {name} is not a field of {message.full_name}")
        try:
            value = protojson.from_text(fields[-1], text)
        except ValueError as error:
            proto, json_path = _paths(fields)
            problems.append(Violation(proto, json_path, f"in the path: {error}"))
            continue
        _set(data, fields, value)
    return problems


def _mask_paths(descriptor: Descriptor, value: dict[str, Any], prefix: str) -> list[str]:
    """FieldMask paths (in JSON's camelCase form) of the keys set in a JSON object."""
    paths = []
    for key, item in value.items():
        field = protojson.field_named(descriptor, key)
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

    A body bound to a `google.api.HttpBody` is taken as is, with its content type. Input that
    does not fit raises InputError with one violation per bad field.
    """
    route = match.route
    if route.strings_only and not query:  # the common GET: no JSON to parse
        simple: Message = route.method.request_type(**match.variables)
        return simple
    message = route.method.request_type()
    descriptor = message.DESCRIPTOR
    data: dict[str, Any] = {}
    body_field = route.rule.body
    raw_target = _raw_body_target(match, message)
    if raw_target is not None:
        body_field = ""  # the body is not JSON; path and query still bind the other fields
    if body_field:
        parsed = protojson.loads(body) if body.strip() else {}
        if body_field == "*":
            if not isinstance(parsed, dict):
                raise InputError("the body must be a JSON object")
            data = parsed
        else:
            data[body_field] = parsed
            _fill_update_mask(match, descriptor, data, query)
    bound = dict.fromkeys(match.variables, "path")
    problems: list[Violation] = []
    if not query:
        pass  # (most requests: nothing to parse)
    elif body_field == "*":
        problems = _unwanted_query(descriptor, query)
    else:
        if body_field:
            bound[body_field] = "body"
        problems = _query(descriptor, query, data, bound)
    problems += _path_variables(descriptor, match.variables, data)
    if problems:
        raise InputError(problems)
    if raw_target is None:
        fast = flat.build(route.method.request_type, data)
        if fast is not None:
            return fast
    try:
        json_format.ParseDict(data, message)
    except (json_format.ParseError, RecursionError, ValueError, TypeError):
        explained = protojson.diagnose(descriptor, data)
        if not explained:
            explained = [Violation("", "", f"the request does not fit {descriptor.full_name}")]
        raise InputError(explained) from None
    raw_target = _raw_body_target(match, message)
    if raw_target is not None:
        raw_target.content_type = content_type  # type: ignore[attr-defined]
        raw_target.data = body  # type: ignore[attr-defined]
    built: Message = message
    return built


def raw_response(match: Match, response: Message) -> tuple[str, bytes] | None:
    """(content type, bytes) when the response, or its response_body, is a google.api.HttpBody."""
    if match.route.http_body is False:  # (known from the route: most answers are JSON)
        return None
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
    if match.route.flat_answer:  # (known from the route: no check per response)
        return orjson.dumps(flat.object_of(response))
    field_name = match.route.rule.response_body
    rendered: Any = None if field_name else flat.to_object(response)
    if rendered is None:
        rendered = json_format.MessageToDict(response)
    if field_name:
        field = response.DESCRIPTOR.fields_by_name[field_name]
        rendered = rendered.get(field.json_name, [] if field.is_repeated else None)
        if rendered is None:
            rendered = json_format.MessageToDict(getattr(response, field_name))
    return orjson.dumps(rendered)
