"""The flat-message fast path of the JSON mapping agrees with protobuf's json_format."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from keel.gateway import flat

F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "name": F.TYPE_STRING,
    "flag": F.TYPE_BOOL,
    "count": F.TYPE_INT32,
    "delta": F.TYPE_SINT32,
    "fixed": F.TYPE_SFIXED32,
    "size": F.TYPE_UINT32,
    "word": F.TYPE_FIXED32,
    "display_name": F.TYPE_STRING,
}


def _types() -> tuple[type[Message], type[Message]]:
    """A flat message (every kind, a proto3 optional) and one that is not (an int64 field)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="flat_test.proto", package="flattest", syntax="proto3"
    )
    flat_type = file.message_type.add(name="Flat")
    for number, (name, kind) in enumerate(_SCALARS.items(), start=1):
        flat_type.field.add(name=name, number=number, type=kind, label=F.LABEL_OPTIONAL)
    chosen = flat_type.field.add(
        name="chosen", number=20, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, oneof_index=0
    )
    chosen.proto3_optional = True
    flat_type.oneof_decl.add(name="_chosen")
    other = file.message_type.add(name="Wide")
    other.field.add(name="name", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    other.field.add(name="total", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("flattest.Flat")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("flattest.Wide")),
    )


FLAT, WIDE = _types()
_KEYS = [*_SCALARS, "displayName", "chosen", "unknown"]
_VALUES = st.one_of(
    st.text(max_size=5),
    st.booleans(),
    st.integers(min_value=-(1 << 33), max_value=1 << 33),
    st.floats(allow_nan=False),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


def _parsed(data: dict[str, Any]) -> Message | None:
    message = FLAT()
    try:
        json_format.ParseDict(data, message)
    except (json_format.ParseError, ValueError, TypeError):
        return None
    return message


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=5))
def test_build_is_parse_dict_or_steps_aside(data: dict[str, Any]) -> None:
    built = flat.build(FLAT, data)
    expected = _parsed(data)
    if built is not None:  # the fast path took it: json_format agrees, field for field
        assert expected is not None
        assert built == expected
        assert built.HasField("chosen") == expected.HasField("chosen")
    if expected is None:  # json_format refuses it: the fast path never accepts it
        assert built is None


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS[:-1]), _VALUES, max_size=5))
def test_to_object_is_message_to_dict(data: dict[str, Any]) -> None:
    message = _parsed(data)
    if message is None:
        return
    assert flat.to_object(message) == json_format.MessageToDict(message)


def test_typical_request_takes_the_fast_path() -> None:
    built = flat.build(FLAT, {"displayName": "mug", "count": 2, "flag": True, "chosen": ""})
    assert built == FLAT(display_name="mug", count=2, flag=True, chosen="")
    assert built is not None
    assert built.HasField("chosen")


def test_what_json_format_must_judge_steps_aside() -> None:
    assert flat.build(FLAT, {"count": True}) is None  # a JSON bool is no integer
    assert flat.build(FLAT, {"count": "2"}) is None  # a string integer: json_format's form
    assert flat.build(FLAT, {"size": -1}) is None  # out of uint32's range
    assert flat.build(FLAT, {"display_name": "a", "displayName": "b"}) is None  # twice
    assert flat.build(FLAT, {"nope": 1}) is None
    assert flat.build(WIDE, {"name": "x"}) is None  # an int64 field: not flat
    assert flat.to_object(WIDE(name="x", total=3)) is None
