"""Proto3 JSON input, explained field by field.

protobuf's `json_format` converts; this module says what is wrong when it cannot, in proto JSON's
terms and naming the field by its proto path and JSON name (`lines[0].quantity`: "expected an
integer (int32), got "x0""), instead of Python's words. It also turns the text of path
variables and query parameters into the JSON value of their field's type, and reads JSON bodies
strictly (a key given twice, `NaN` literals and unbounded nesting are refused).

Nothing here knows HTTP: the gateway and in-process REST share it.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

MAX_DEPTH = 100
"""Deepest nesting of a JSON body (json_format's own limit for messages)."""

_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: ("int32", -(1 << 31), (1 << 31) - 1),
    FieldDescriptor.CPPTYPE_UINT32: ("uint32", 0, (1 << 32) - 1),
    FieldDescriptor.CPPTYPE_INT64: ("int64", -(1 << 63), (1 << 63) - 1),
    FieldDescriptor.CPPTYPE_UINT64: ("uint64", 0, (1 << 64) - 1),
}
_FLOAT_MAX = 3.4028234663852886e38
_FLOAT_WORDS = ("NaN", "Infinity", "-Infinity")
_WRAPPERS = {
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}
_STRING_FORMS: dict[str, tuple[Any, str]] = {
    "google.protobuf.Timestamp": (
        timestamp_pb2.Timestamp,
        "an RFC 3339 timestamp such as 2024-01-31T09:30:00Z",
    ),
    "google.protobuf.Duration": (duration_pb2.Duration, "a duration in seconds such as 1.5s"),
    "google.protobuf.FieldMask": (
        field_mask_pb2.FieldMask,
        "a field mask: comma-separated field paths",
    ),
}


class Violation(NamedTuple):
    """One field the input gets wrong: its proto path, its JSON path, and what was expected."""

    field: str
    json_path: str
    description: str

    def __str__(self) -> str:
        if self.json_path and self.json_path != self.field:
            return f"{self.field} ({self.json_path} in JSON): {self.description}"
        return f"{self.field}: {self.description}" if self.field else self.description


class InputError(ValueError):
    """Input that cannot become the message; `violations` name each bad field."""

    def __init__(self, violations: list[Violation] | str) -> None:
        if isinstance(violations, str):
            violations = [Violation("", "", violations)]
        self.violations = violations
        first = str(violations[0])
        more = len(violations) - 1
        super().__init__(f"{first} (and {more} more, see details)" if more else first)


class _Path(NamedTuple):
    proto: str
    json: str

    def field(self, field: FieldDescriptor) -> _Path:
        dot = "." if self.proto else ""
        return _Path(f"{self.proto}{dot}{field.name}", f"{self.json}{dot}{field.json_name}")

    def item(self, key: object) -> _Path:
        text = f"[{key}]" if isinstance(key, int) else f"[{json.dumps(key)}]"
        return _Path(self.proto + text, self.json + text)


def decode_base64(text: str) -> bytes:
    """Bytes from base64 as proto JSON accepts it: standard or URL-safe, padded or not.
    ValueError (binascii.Error) when it is not base64."""
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return json.dumps(shown)
    return json.dumps(value)


def loads(body: bytes) -> Any:
    """A JSON document, refusing what proto JSON refuses: duplicate keys, NaN/Infinity
    literals, nesting deeper than MAX_DEPTH. Raises InputError naming the problem."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError([Violation("", "", "the body is not UTF-8 text")]) from None
    try:
        return _DECODER.decode(text)
    except _DuplicateKeyError as error:
        raise InputError([Violation("", "", str(error))]) from None
    except RecursionError:
        raise InputError([Violation("", "", "the body is nested too deeply")]) from None
    except json.JSONDecodeError as error:  # where, not Python's "(char 0)"
        where = f"line {error.lineno}, column {error.colno}"
        problem = error.msg[:1].lower() + error.msg[1:]
        message = f"the body is not valid JSON ({where}): {problem}"
        raise InputError([Violation("", "", message)]) from None
    except ValueError as error:
        raise InputError([Violation("", "", f"the body is not valid JSON: {error}")]) from None


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(f"the key {json.dumps(key)} appears twice in one object")
            seen.add(key)
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f'{name} is not JSON (proto JSON writes it as the string "{name}")')


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)
"""One decoder for every body (json.loads would build one per call with these hooks)."""


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether a parsed JSON value nests deeper than `limit` (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return False


def _type_name(field: FieldDescriptor) -> str:
    if field.enum_type is not None:
        return f"a {field.enum_type.full_name} name or number"
    if field.message_type is not None:
        return f"a {field.message_type.full_name} object"
    names = {
        FieldDescriptor.CPPTYPE_BOOL: "true or false",
        FieldDescriptor.CPPTYPE_STRING: "base64 bytes"
        if field.type == FieldDescriptor.TYPE_BYTES
        else "a string",
        FieldDescriptor.CPPTYPE_FLOAT: "a number (float)",
        FieldDescriptor.CPPTYPE_DOUBLE: "a number (double)",
    }
    if field.cpp_type in _RANGES:
        return f"an integer ({_RANGES[field.cpp_type][0]})"
    return names[field.cpp_type]


def _scalar_problem(field: FieldDescriptor, value: Any) -> str | None:
    """Why `value` is not proto JSON for the scalar or enum `field`, or None if it is."""
    cpp = field.cpp_type
    if cpp in _RANGES:
        kind, low, high = _RANGES[cpp]
        number: int | None = None
        if isinstance(value, bool):
            number = None
        elif isinstance(value, int):
            number = value
        elif (isinstance(value, float) and value.is_integer()) or (
            isinstance(value, str) and _INTEGER.fullmatch(value.strip())
        ):
            number = int(value)
        if number is None:
            return f"expected an integer ({kind}), got {_kind(value)}"
        if not low <= number <= high:
            return f"{number} is out of range for {kind} ({low} to {high})"
        return None
    if cpp in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return f"expected {_type_name(field)}, got {_kind(value)}"
        if isinstance(value, str) and value not in _FLOAT_WORDS:
            try:
                float(value)
            except ValueError:
                return f"expected {_type_name(field)}, got {_kind(value)}"
        too_big = not isinstance(value, str) and math.isfinite(value) and abs(value) > _FLOAT_MAX
        if cpp == FieldDescriptor.CPPTYPE_FLOAT and too_big:
            return f"{value} is out of range for float"
        return None
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return None if isinstance(value, bool) else f"expected true or false, got {_kind(value)}"
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        enum = field.enum_type
        assert enum is not None  # an enum field has its type
        if isinstance(value, bool) or not isinstance(value, int | str):
            return f"expected {_type_name(field)}, got {_kind(value)}"
        if isinstance(value, str) and enum.values_by_name.get(value) is None:
            names = ", ".join(v.name for v in enum.values[:8])
            return f"{_kind(value)} is not a value of {enum.full_name} ({names})"
        return None
    if not isinstance(value, str):
        return f"expected {_type_name(field)}, got {_kind(value)}"
    if field.type == FieldDescriptor.TYPE_BYTES:
        try:
            decode_base64(value)
        except ValueError:
            return f"expected base64 bytes, got {_kind(value)}"
    return None


def diagnose(descriptor: Descriptor, value: Any, limit: int = 20) -> list[Violation]:
    """The ways `value` (parsed JSON) fails to be proto JSON for `descriptor` (at most `limit`)."""
    found: list[Violation] = []
    for violation in _message(descriptor, value, _Path("", ""), 0):
        found.append(violation)
        if len(found) >= limit:
            break
    return found


def _message(descriptor: Descriptor, value: Any, path: _Path, depth: int) -> Iterator[Violation]:
    if depth > MAX_DEPTH:
        yield Violation(path.proto, path.json, f"nested deeper than {MAX_DEPTH} levels")
        return
    name = descriptor.full_name
    if name in _STRING_FORMS:
        cls, what = _STRING_FORMS[name]
        if not isinstance(value, str):
            yield Violation(path.proto, path.json, f"expected {what}, got {_kind(value)}")
            return
        try:
            cls().FromJsonString(value)
        except (ValueError, TypeError):
            yield Violation(path.proto, path.json, f"expected {what}, got {_kind(value)}")
        return
    if name in _WRAPPERS:
        yield from _value(descriptor.fields_by_name["value"], value, path, depth)
        return
    if name == "google.protobuf.Value":
        if depth_exceeds(value, MAX_DEPTH - depth):
            yield Violation(path.proto, path.json, f"nested deeper than {MAX_DEPTH} levels")
        return
    if name == "google.protobuf.ListValue":
        if not isinstance(value, list):
            yield Violation(path.proto, path.json, f"expected an array, got {_kind(value)}")
        elif depth_exceeds(value, MAX_DEPTH - depth):
            yield Violation(path.proto, path.json, f"nested deeper than {MAX_DEPTH} levels")
        return
    if not isinstance(value, dict):
        yield Violation(path.proto, path.json, f"expected an object ({name}), got {_kind(value)}")
        return
    if name == "google.protobuf.Struct":
        if depth_exceeds(value, MAX_DEPTH - depth):
            yield Violation(path.proto, path.json, f"nested deeper than {MAX_DEPTH} levels")
        return
    if name == "google.protobuf.Any":
        if not isinstance(value.get("@type"), str):
            yield Violation(path.proto, path.json, 'an Any needs "@type" naming its message type')
        return
    oneofs: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key, item in value.items():
        field = field_named(descriptor, key)
        if field is None:
            yield Violation(
                f"{path.proto}.{key}" if path.proto else key,
                f"{path.json}.{key}" if path.json else key,
                f"no such field in {name}",
            )
            continue
        sub = path.field(field)
        if field.name in seen:
            yield Violation(
                sub.proto, sub.json, f"given twice, as {seen[field.name]!r} and as {key!r}"
            )
            continue
        seen[field.name] = key
        oneof = field.containing_oneof
        if oneof is not None and item is not None:
            if oneof.name in oneofs:
                yield Violation(
                    sub.proto,
                    sub.json,
                    f"only one of oneof {oneof.name} may be set; {oneofs[oneof.name]} is too",
                )
                continue
            oneofs[oneof.name] = field.name
        yield from _value(field, item, sub, depth + 1)


def field_named(descriptor: Descriptor, key: str) -> FieldDescriptor | None:
    """The field that `key` names, by its proto name or its JSON name."""
    return descriptor.fields_by_name.get(key) or next(
        (f for f in descriptor.fields if f.json_name == key), None
    )


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _value(field: FieldDescriptor, value: Any, path: _Path, depth: int) -> Iterator[Violation]:
    if value is None:
        return  # null: the field's default
    if _is_map(field):
        if not isinstance(value, dict):
            yield Violation(
                path.proto, path.json, f"expected an object (a map), got {_kind(value)}"
            )
            return
        entry = field.message_type
        assert entry is not None  # a map field's entry message
        key_field = entry.fields_by_name["key"]
        value_field = entry.fields_by_name["value"]
        for key, item in value.items():
            if key_field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
                problem = None if key in ("true", "false") else "map keys are true or false"
            else:
                problem = _scalar_problem(key_field, key)
            if problem:
                yield Violation(path.proto, path.json, f"key {json.dumps(key)}: {problem}")
            elif item is None:
                yield Violation(path.item(key).proto, path.item(key).json, "null in a map")
            else:
                yield from _single(value_field, item, path.item(key), depth)
        return
    if field.is_repeated:
        if not isinstance(value, list):
            yield Violation(path.proto, path.json, f"expected an array, got {_kind(value)}")
            return
        for index, item in enumerate(value):
            if item is None:
                yield Violation(path.item(index).proto, path.item(index).json, "null in a list")
            else:
                yield from _single(field, item, path.item(index), depth)
        return
    yield from _single(field, value, path, depth)


def _single(field: FieldDescriptor, value: Any, path: _Path, depth: int) -> Iterator[Violation]:
    if field.message_type is not None:
        yield from _message(field.message_type, value, path, depth + 1)
        return
    problem = _scalar_problem(field, value)
    if problem:
        yield Violation(path.proto, path.json, problem)


def from_text(field: FieldDescriptor, text: str) -> Any:
    """The proto JSON value of a path variable or query parameter for `field`.

    Raises ValueError saying what the field expects when `text` cannot be one.
    """
    target = field
    if field.message_type is not None:
        name = field.message_type.full_name
        if name in _WRAPPERS:
            target = field.message_type.fields_by_name["value"]
        elif name in _STRING_FORMS or name == "google.protobuf.Value":
            return text
        else:
            raise ValueError(f"{name} is a message; set its fields (field.subfield=value)")
    cpp = target.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        word = text.lower()
        if word in ("true", "1"):
            return True
        if word in ("false", "0"):
            return False
        raise ValueError(f"expected true or false, got {_kind(text)}")
    if cpp == FieldDescriptor.CPPTYPE_ENUM and _INTEGER.fullmatch(text):
        return int(text)
    problem = _scalar_problem(target, text)
    if problem:
        raise ValueError(problem)
    return text
