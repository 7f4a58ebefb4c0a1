"""A field path of a request message in the JSON client's terms: `lines[0].product_id` →
`lines[0].productId` (each field's JSON name; subscripts and unknown names kept as they are).

google.rpc.BadRequest's `field` is "a sequence of dot-separated identifiers that identify a
protocol buffer field", written with JSON names when the response is JSON. Violations are made
with proto names (protovalidate, a service's own errors); the REST edge answers them renamed.
"""

from __future__ import annotations

import re

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_SEGMENT = re.compile(
    r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)"  # a field name
    r'(?P<subscripts>(?:\[(?:"(?:[^"\\]|\\.)*"|[^\]]*)\])*)'  # then [0], ["key"], ...
)


def json_path(message: Descriptor, path: str) -> str:
    """`path` (proto field names, dot-separated, with `[i]` / `["key"]` subscripts) with each
    field of `message` it walks through named by its JSON name; from a part it cannot read on,
    the rest as it is (never a failed error response)."""
    renamed: list[str] = []
    current: Descriptor | None = message
    position = 0
    while position < len(path):
        mark = position
        if renamed:
            if path[position] != ".":
                break
            position += 1
        found = _SEGMENT.match(path, position)
        if found is None:
            position = mark
            break
        name, subscripts = found["name"], found["subscripts"]
        field = current.fields_by_name.get(name) if current is not None else None
        renamed.append((field.json_name if field is not None else name) + subscripts)
        current = _inner(field, bool(subscripts))
        position = found.end()
    return ".".join(renamed) + path[position:]


def _inner(field: FieldDescriptor | None, subscripted: bool) -> Descriptor | None:
    """The message whose fields the next segment names: the field's message type, or a map's
    value type once subscripted."""
    if field is None or field.message_type is None:
        return None
    kind = field.message_type
    if kind.GetOptions().map_entry:
        if not subscripted:
            return None
        value = kind.fields_by_name["value"]
        return value.message_type
    return kind
