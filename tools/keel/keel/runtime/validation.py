"""Request validation against the `buf.validate` rules in the protos (protovalidate).

protovalidate's native engine validates official protobuf messages in place (a few µs for a
typical request). Every broken rule becomes one google.rpc.BadRequest field violation, with the
field path (`lines[0].quantity`), the rule's message and its id as the reason.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import protovalidate
from google.protobuf.message import Message

from keel.errors import FieldViolation, InvalidArgument


@cache
def _validator() -> protovalidate.Validator:
    return protovalidate.Validator()


def field_path(path: Any) -> str:
    """`lines[0].quantity` from a buf.validate.FieldPath."""
    parts: list[str] = []
    for element in path.elements:
        name = element.field_name
        parts.append(f".{name}" if parts else name)
        subscript = element.subscript
        if subscript is not None:
            value = subscript.value
            parts.append(f'["{value}"]' if isinstance(value, str) else f"[{value}]")
    return "".join(parts)


def check(message: Message) -> None:
    """Raise InvalidArgument with one field violation per rule `message` breaks."""
    violations = _validator().collect_violations(message)
    if not violations:
        return
    found = []
    for violation in violations:
        proto = violation.proto
        path = field_path(proto.field) if proto.field is not None else ""
        found.append(FieldViolation(path, proto.message or proto.rule_id, proto.rule_id))
    name = message.DESCRIPTOR.full_name
    summary = "; ".join(f"{v.field or name}: {v.description}" for v in found)
    raise InvalidArgument(
        f"invalid {name}: {summary}",
        field_violations=found,
        reason="VALIDATION_FAILED",
        domain="keel",
        metadata={"message": name},
    )
