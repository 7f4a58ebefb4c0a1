"""The proto3 JSON mapping's fast path for flat messages.

A flat message has only singular string, bool and 32-bit integer fields (at most one per oneof)
and no extensions. Its JSON object is its set fields by JSON name, exactly what
`json_format.MessageToDict` writes, and a JSON object whose keys each name a different field
(by JSON or proto name) with a value of exactly that field's JSON type builds it by keyword
arguments, exactly as `json_format.ParseDict` would. Anything else gets `None` here and goes
through `json_format`, which also explains what is wrong. Most requests and many responses are
flat, and json_format's generic Python costs more than the rest of a request's transcoding.
"""

from __future__ import annotations

from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_INT32 = (-(1 << 31), (1 << 31) - 1)
_UINT32 = (0, (1 << 32) - 1)
_KINDS: dict[int, tuple[type, tuple[int, int] | None]] = {
    FieldDescriptor.TYPE_STRING: (str, None),
    FieldDescriptor.TYPE_BOOL: (bool, None),
    FieldDescriptor.TYPE_INT32: (int, _INT32),
    FieldDescriptor.TYPE_SINT32: (int, _INT32),
    FieldDescriptor.TYPE_SFIXED32: (int, _INT32),
    FieldDescriptor.TYPE_UINT32: (int, _UINT32),
    FieldDescriptor.TYPE_FIXED32: (int, _UINT32),
}

_Field = tuple[str, type, tuple[int, int] | None]
"""A field's proto name, the Python type of its JSON value, and an integer's range."""

_keys: dict[Any, dict[str, _Field] | None] = {}


def _flat_keys(descriptor: Descriptor | Any) -> dict[str, _Field] | None:
    """JSON and proto names of a flat message's fields, or None if it is not flat."""
    try:
        return _keys[descriptor]
    except KeyError:
        pass
    keys: dict[str, _Field] | None = {}
    if descriptor.extension_ranges:
        keys = None
    for field in descriptor.fields:
        kind = _KINDS.get(field.type)
        oneof = field.containing_oneof
        if keys is None or kind is None or field.is_repeated:
            keys = None
            break
        if oneof is not None and len(oneof.fields) > 1:
            keys = None
            break
        keys[field.json_name] = keys[field.name] = (field.name, *kind)
    _keys[descriptor] = keys
    return keys


def is_flat(descriptor: Descriptor) -> bool:
    """Whether messages of this type are flat."""
    return _flat_keys(descriptor) is not None


def to_object(message: Message) -> dict[str, Any] | None:
    """The proto JSON object of a flat message (None if it is not flat)."""
    if _flat_keys(message.DESCRIPTOR) is None:
        return None
    return object_of(message)


def object_of(message: Message) -> dict[str, Any]:
    """The proto JSON object of a message known to be flat."""
    return {field.json_name: value for field, value in message.ListFields()}


def build(message_type: type[Message], data: dict[str, Any]) -> Message | None:
    """`message_type` from the JSON object `data`, or None unless both are flat and every value
    is exactly of its field's JSON type (then json_format decides, and explains)."""
    keys = _flat_keys(message_type.DESCRIPTOR)
    if keys is None:
        return None
    values: dict[str, Any] = {}
    for key, value in data.items():
        field = keys.get(key)
        if field is None or value.__class__ is not field[1]:  # (True is no int here)
            return None
        bounds = field[2]
        if bounds is not None and not bounds[0] <= cast("int", value) <= bounds[1]:
            return None
        values[field[0]] = value
    if len(values) != len(data):  # one field named twice (JSON name and proto name)
        return None
    return message_type(**values)
