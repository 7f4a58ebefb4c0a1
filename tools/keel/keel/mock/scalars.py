"""Scalar values that satisfy a field's `buf.validate` rules: strings, numbers, enums."""

from __future__ import annotations

import random
import string
import uuid
from typing import Any

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor

from keel.mock import regex

_INTEGERS = {
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
}
_UNSIGNED = {"uint32", "uint64", "fixed32", "fixed64"}
_FLOATS = {FieldDescriptor.TYPE_FLOAT: "float", FieldDescriptor.TYPE_DOUBLE: "double"}
WORDS = [
    "amber",
    "basil",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "grove",
    "harbor",
    "iris",
    "juniper",
    "kestrel",
    "lumen",
]


def _rules(rules: Any, kind: str) -> Any:
    """The `kind` rules (`string`, `int32`, ...) of FieldRules, or None."""
    return getattr(rules, kind) if rules is not None and rules.HasField(kind) else None


def _given(rules: Any, name: str) -> bool:
    return rules is not None and rules.HasField(name)


def _picked(rules: Any, rng: random.Random) -> tuple[bool, Any]:
    """A value fixed by `const`, `in` or `example`, if the rules name one."""
    if rules is None:
        return False, None
    if _given(rules, "const"):
        return True, rules.const
    allowed = list(getattr(rules, "in"))
    if allowed:
        return True, rng.choice(allowed)
    examples = [e for e in rules.example if e not in rules.not_in]
    if examples:
        return True, rng.choice(examples)
    return False, None


def scalar(field: FieldDescriptor, rules: Any, rng: random.Random) -> Any:
    """A value for one (non-message) field, or element of a repeated field."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return text(field.name, _rules(rules, "string"), rng)
    if kind == FieldDescriptor.TYPE_BYTES:
        found, value = _picked(_rules(rules, "bytes"), rng)
        return value if found else rng.randbytes(8)
    if kind == FieldDescriptor.TYPE_BOOL:
        found, value = _picked(_rules(rules, "bool"), rng)
        return value if found else rng.random() < 0.5
    if kind == FieldDescriptor.TYPE_ENUM:
        return enum_value(field.enum_type, _rules(rules, "enum"), rng)
    if kind in _INTEGERS:
        return integer(_INTEGERS[kind], _rules(rules, _INTEGERS[kind]), rng)
    return floating(_rules(rules, _FLOATS[kind]), rng)


def integer(name: str, rules: Any, rng: random.Random) -> int:
    """An integer within the rules' bounds (by default 1..1000)."""
    found, value = _picked(rules, rng)
    if found:
        return int(value)
    bits = 32 if "32" in name else 64
    lowest = 0 if name in _UNSIGNED else -(2 ** (bits - 1))
    highest = 2**bits - 1 if name in _UNSIGNED else 2 ** (bits - 1) - 1
    low, high = 1, 1000
    if _given(rules, "gt"):
        low = rules.gt + 1
    elif _given(rules, "gte"):
        low = rules.gte
    if _given(rules, "lt"):
        high = rules.lt - 1
    elif _given(rules, "lte"):
        high = rules.lte
    if low > high:  # one bound given beyond the default range of the other
        low, high = (
            (low, low + 1000)
            if _given(rules, "gt") or _given(rules, "gte")
            else (high - 1000, high)
        )
    low, high = max(low, lowest), min(high, highest)
    excluded = set(rules.not_in) if rules is not None else set()
    for _ in range(50):
        value = rng.randint(low, high)
        if value not in excluded:
            return value
    return low


def floating(rules: Any, rng: random.Random) -> float:
    """A float within the rules' bounds (by default 0..1000), two decimals."""
    found, value = _picked(rules, rng)
    if found:
        return float(value)
    low = rules.gt if _given(rules, "gt") else rules.gte if _given(rules, "gte") else 0.0
    high = rules.lt if _given(rules, "lt") else rules.lte if _given(rules, "lte") else low + 1000
    value = round(rng.uniform(low, high), 2)
    return min(
        max(value, low + 0.01 if _given(rules, "gt") else low),
        high - 0.01 if _given(rules, "lt") else high,
    )


def enum_value(enum: EnumDescriptor | None, rules: Any, rng: random.Random) -> int:
    """A defined value of `enum` other than its zero (UNSPECIFIED) value, unless it is the only
    one the rules allow."""
    found, value = _picked(rules, rng)
    if found:
        return int(value)
    excluded = set(rules.not_in) if rules is not None else set()
    if enum is None:
        return 0
    numbers = [v.number for v in enum.values if v.number not in excluded]
    named = [n for n in numbers if n != 0] or numbers
    return rng.choice(named) if named else 0


def text(name: str, rules: Any, rng: random.Random) -> str:
    """A string for field `name` honouring its length, pattern, affixes and well-known format."""
    found, value = _picked(rules, rng)
    if found:
        return str(value)
    if rules is not None and rules.pattern:
        core = regex.sample(rules.pattern, rng)
    elif rules is not None and rules.WhichOneof("well_known"):
        core = _well_known(rules.WhichOneof("well_known"), rng)
    else:
        core = _word(name, rng)
    if rules is None:
        return core
    core = f"{rules.prefix}{core}{rules.contains}{rules.suffix}"
    low = rules.len if _given(rules, "len") else rules.min_len
    high = rules.len if _given(rules, "len") else rules.max_len if _given(rules, "max_len") else 0
    while len(core) < low:
        core += rng.choice(string.ascii_lowercase)
    if high and len(core) > high:
        keep = max(high - len(rules.suffix), len(rules.prefix))
        core = (core[:keep] + rules.suffix)[:high]
    return core


def _word(name: str, rng: random.Random) -> str:
    tag = "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    if name == "currency" or name.endswith("_currency"):
        return rng.choice(("EUR", "USD", "GBP"))
    if name.endswith("_id") or name == "id":
        return f"{name.removesuffix('_id').removesuffix('id')[:4] or 'id'}_{tag}"
    return f"{rng.choice(WORDS)}-{tag}"


def _well_known(kind: str, rng: random.Random) -> str:
    word = rng.choice(WORDS)
    if kind in {"ip", "ipv4"}:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    if kind in {"uuid", "tuuid"}:
        drawn = uuid.UUID(int=rng.getrandbits(128), version=4)
        return str(drawn) if kind == "uuid" else drawn.hex
    if kind == "ulid":
        return "01" + "".join(rng.choice("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for _ in range(24))
    made = {
        "email": f"{word}@example.com",
        "hostname": f"{word}.example.com",
        "address": f"{word}.example.com",
        "ipv6": f"2001:db8::{rng.randint(1, 0xFFFF):x}",
        "uri": f"https://example.com/{word}",
        "uri_ref": f"/{word}",
        "host_and_port": f"{word}.example.com:{rng.randint(1024, 65535)}",
        "protobuf_fqn": f"acme.{word}.v1.Thing",
        "protobuf_dot_fqn": f".acme.{word}.v1.Thing",
    }
    return made.get(kind, word)
