"""Valid fake messages: a walk of the message descriptor honouring `buf.validate` rules, the
result checked with protovalidate (and drawn again when a rule the walk cannot see, such as a
CEL expression, fails). The same seed, method and request always give the same message."""

from __future__ import annotations

import hashlib
import random
from typing import Any

from buf.validate import validate_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from keel.errors import InvalidArgument
from keel.mock import scalars
from keel.runtime import validation

BASE_TIME = 1_767_225_600
"""Timestamps are drawn from the year after 2026-01-01T00:00:00Z."""
MAX_DEPTH = 4
"""Message fields deeper than this are left unset (recursive types end)."""
ATTEMPTS = 32


class FakeDataError(Exception):
    """No draw of a message passed its protovalidate rules."""


def rng_for(seed: int, key: str, data: bytes = b"") -> random.Random:
    """A random generator determined by the seed, a key (the method) and bytes (the request)."""
    digest = hashlib.sha256(f"{seed}\0{key}\0".encode() + data).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def fake(message_type: type[Message], rng: random.Random) -> Message:
    """A message of `message_type` that passes its protovalidate rules."""
    message = message_type()
    fill_valid(message, rng, 0)
    if not validation.has_rules(message.DESCRIPTOR):
        return message
    try:
        validation.check(message)
    except InvalidArgument as error:
        _clear_violated(message, error)
        try:
            validation.check(message)
        except InvalidArgument as still:
            name = message_type.DESCRIPTOR.full_name
            raise FakeDataError(f"no valid {name} after {ATTEMPTS} draws: {still}") from None
    return message


def _clear_violated(message: Message, error: InvalidArgument) -> None:
    """Unset the optional top-level fields a violation names (a rule holds for unset fields)."""
    fields = message.DESCRIPTOR.fields_by_name
    for violation in error.field_violations:
        name = violation.field.split(".", 1)[0].split("[", 1)[0]
        field = fields.get(name)
        if field is not None and not _rules_of(field).required:
            message.ClearField(name)


def _rules_of(field: Any) -> Any:
    options = field.GetOptions()
    if options.HasExtension(validate_pb2.field):
        return options.Extensions[validate_pb2.field]
    return validate_pb2.FieldRules()


def fill(message: Message, rng: random.Random, depth: int = 0, *, redraw: bool = False) -> None:
    """Set the fields of `message` (in place) with values its rules allow; `redraw` draws its
    own scalar fields again and keeps the messages it holds."""
    descriptor = message.DESCRIPTOR
    if _well_known(message, rng):
        return
    left_out = _left_out(descriptor, rng)
    for field in descriptor.fields:
        if redraw:
            if field.message_type is not None:
                continue
            message.ClearField(field.name)
        rules = _rules_of(field)
        if field.name in left_out or rules.ignore == validate_pb2.IGNORE_ALWAYS:
            continue
        singular_message = field.message_type is not None and not field.is_repeated
        if singular_message and depth >= MAX_DEPTH and not rules.required:
            continue
        _set(message, field, rules, rng, depth)


def fill_valid(message: Message, rng: random.Random, depth: int) -> None:
    """`fill`, its own fields drawn again while the message breaks a rule (a CEL expression,
    say): each nested message is valid before the one holding it is checked."""
    fill(message, rng, depth)
    if not validation.has_rules(message.DESCRIPTOR):
        return
    for _ in range(ATTEMPTS):
        try:
            validation.check(message)
        except InvalidArgument:
            fill(message, rng, depth, redraw=True)
        else:
            return


def _left_out(descriptor: Any, rng: random.Random) -> set[str]:
    """The fields not set: all but one of each real oneof, and of each
    `(buf.validate.message).oneof` group."""
    groups = [
        [f.name for f in oneof.fields]
        for oneof in descriptor.oneofs
        if len(oneof.fields) > 1 or not oneof.name.startswith("_")
    ]
    options = descriptor.GetOptions()
    if options.HasExtension(validate_pb2.message):
        groups += [list(g.fields) for g in options.Extensions[validate_pb2.message].oneof]
    left: set[str] = set()
    for names in groups:
        kept = rng.choice(names)
        left.update(n for n in names if n != kept)
    return left


def _set(message: Message, field: Any, rules: Any, rng: random.Random, depth: int) -> None:
    if _is_map(field):
        _set_map(message, field, rules, rng, depth)
        return
    if field.is_repeated:
        items = rules.repeated.items if rules.HasField("repeated") else validate_pb2.FieldRules()
        low = rules.repeated.min_items if rules.HasField("repeated") else 0
        high = (
            rules.repeated.max_items
            if rules.HasField("repeated") and rules.repeated.HasField("max_items")
            else max(low, 3)
        )
        count = rng.randint(max(low, min(1, high)), max(low, min(high, low + 2)))
        if depth >= MAX_DEPTH - 1:
            count = low
        container = getattr(message, field.name)
        for _ in range(count):
            if field.message_type is not None:
                fill_valid(container.add(), rng, depth + 1)
            else:
                container.append(scalars.scalar(field, items, rng))
        return
    if field.message_type is not None:
        child = getattr(message, field.name)
        fill_valid(child, rng, depth + 1)
        child.SetInParent()
        return
    setattr(message, field.name, scalars.scalar(field, rules, rng))


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _set_map(message: Message, field: Any, rules: Any, rng: random.Random, depth: int) -> None:
    entry = field.message_type
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    keys = rules.map.keys if rules.HasField("map") else validate_pb2.FieldRules()
    values = rules.map.values if rules.HasField("map") else validate_pb2.FieldRules()
    low = rules.map.min_pairs if rules.HasField("map") else 0
    container = getattr(message, field.name)
    for _ in range(max(low, 1 if depth < MAX_DEPTH - 1 else 0)):
        key = scalars.scalar(key_field, keys, rng)
        if value_field.message_type is not None:
            fill_valid(container[key], rng, depth + 1)
        else:
            container[key] = scalars.scalar(value_field, values, rng)


def _well_known(message: Message, rng: random.Random) -> bool:
    """Fill the well-known types whose fields alone would not be meaningful; True if done."""
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        message.seconds = BASE_TIME + rng.randint(0, 365 * 86_400)  # type: ignore[attr-defined]
        return True
    if name == "google.protobuf.Duration":
        message.seconds = rng.randint(1, 3600)  # type: ignore[attr-defined]
        return True
    if name == "google.protobuf.Struct":
        message.update({"note": rng.choice(scalars.WORDS)})  # type: ignore[attr-defined]
        return True
    if name == "google.protobuf.Value":
        message.string_value = rng.choice(scalars.WORDS)  # type: ignore[attr-defined]
        return True
    return name in {
        "google.protobuf.Any",
        "google.protobuf.FieldMask",
        "google.protobuf.ListValue",
        "google.protobuf.Empty",
    }
