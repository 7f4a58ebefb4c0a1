"""Message encode+decode cost: official protobuf runtime (upb) vs betterproto and betterproto2.

This reproduces, on this machine, the measurement that justified using the official protobuf
runtime for messages instead of betterproto. The issue reported, for an 11-field message with 100
nested items: upb 11.6 µs per encode+decode, betterproto2 0.10 3,869 µs (334x slower), betterproto
1.2.5 3,482 µs.

The same schema is declared three ways, with no generated files:

- official protobuf: classes built at run time from a FileDescriptorProto constructed in code
  (descriptor_pool + message_factory.GetMessageClass), so it runs on whatever backend
  google.protobuf picked (upb when installed normally);
- betterproto 1.2.5: hand-written dataclasses, as its compiler would emit them;
- betterproto2 0.10.0: hand-written dataclasses using betterproto2.field(...) metadata (the message
  pool registration its compiler adds is only needed for google.protobuf.Any, so it is omitted).

    enum Status { STATUS_UNSPECIFIED = 0; STATUS_PENDING = 1; STATUS_SHIPPED = 2; }
    message Address { string street = 1; string city = 2; string country = 3; }
    message Item { string sku = 1; int32 quantity = 2; double unit_price = 3; string note = 4; }
    message Order {
      string id = 1; string customer = 2; int64 created_at = 3; int32 priority = 4;
      bool gift = 5; double total = 6; Status status = 7; bytes signature = 8;
      Address shipping = 9; map<string, string> labels = 10; repeated Item items = 11;
    }

One operation is a round trip: serialize a populated Order (100 items) to bytes and parse the
bytes back into a new message. Each implementation is calibrated to about --budget seconds (the
time split over 3 repeats) and the best repeat is reported; upb, measured in the same run, is the
1.00x baseline. Before timing, every implementation's bytes are parsed by the official class and
must equal the reference message, and each library must decode the official bytes back to its own
message, so a broken declaration fails loudly instead of producing a fast wrong number.

    python bench/message_bench.py           # ~1 s per implementation
    python bench/message_bench.py --quick   # smoke test, well under 3 s
"""

# betterproto declares fields as dataclass defaults built by calls (string_field(1), ...).
# ruff: noqa: RUF009

from __future__ import annotations

import argparse
import importlib.metadata
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

import betterproto
import betterproto2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal import api_implementation
from google.protobuf.message import Message as PbMessage

N_ITEMS = 100
REPEATS = 3
PACKAGE = "keel.bench.v1"

# ---------------------------------------------------------------------------------------------
# (1) Official protobuf: descriptor built in code, classes from the message factory.
# ---------------------------------------------------------------------------------------------

_FDP = descriptor_pb2.FieldDescriptorProto


def _field(
    name: str,
    number: int,
    kind: int,
    type_name: str = "",
    label: int = _FDP.LABEL_OPTIONAL,
) -> _FDP:
    field = _FDP(name=name, number=number, type=kind, label=label)  # type: ignore[arg-type]
    if type_name:
        field.type_name = f".{PACKAGE}.{type_name}"
    return field


def build_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The bench schema (see the module docstring) as a proto3 FileDescriptorProto."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="keel/bench/v1/message_bench.proto", package=PACKAGE, syntax="proto3"
    )
    status = fdp.enum_type.add(name="Status")
    for number, name in enumerate(("STATUS_UNSPECIFIED", "STATUS_PENDING", "STATUS_SHIPPED")):
        status.value.add(name=name, number=number)

    address = fdp.message_type.add(name="Address")
    address.field.extend(
        [
            _field("street", 1, _FDP.TYPE_STRING),
            _field("city", 2, _FDP.TYPE_STRING),
            _field("country", 3, _FDP.TYPE_STRING),
        ]
    )

    item = fdp.message_type.add(name="Item")
    item.field.extend(
        [
            _field("sku", 1, _FDP.TYPE_STRING),
            _field("quantity", 2, _FDP.TYPE_INT32),
            _field("unit_price", 3, _FDP.TYPE_DOUBLE),
            _field("note", 4, _FDP.TYPE_STRING),
        ]
    )

    order = fdp.message_type.add(name="Order")
    labels_entry = order.nested_type.add(name="LabelsEntry")
    labels_entry.options.map_entry = True
    labels_entry.field.extend(
        [_field("key", 1, _FDP.TYPE_STRING), _field("value", 2, _FDP.TYPE_STRING)]
    )
    order.field.extend(
        [
            _field("id", 1, _FDP.TYPE_STRING),
            _field("customer", 2, _FDP.TYPE_STRING),
            _field("created_at", 3, _FDP.TYPE_INT64),
            _field("priority", 4, _FDP.TYPE_INT32),
            _field("gift", 5, _FDP.TYPE_BOOL),
            _field("total", 6, _FDP.TYPE_DOUBLE),
            _field("status", 7, _FDP.TYPE_ENUM, "Status"),
            _field("signature", 8, _FDP.TYPE_BYTES),
            _field("shipping", 9, _FDP.TYPE_MESSAGE, "Address"),
            _field("labels", 10, _FDP.TYPE_MESSAGE, "Order.LabelsEntry", label=_FDP.LABEL_REPEATED),
            _field("items", 11, _FDP.TYPE_MESSAGE, "Item", label=_FDP.LABEL_REPEATED),
        ]
    )
    return fdp


def build_official_order_class() -> type[PbMessage]:
    """The Order class on the installed protobuf backend, from a private descriptor pool."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(build_file_descriptor())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Order"))


# ---------------------------------------------------------------------------------------------
# (2) betterproto 1.2.5: hand-written, as `protoc --python_betterproto_out` would emit them.
# ---------------------------------------------------------------------------------------------


class Bp1Status(betterproto.Enum):
    STATUS_UNSPECIFIED = 0
    STATUS_PENDING = 1
    STATUS_SHIPPED = 2


@dataclass
class Bp1Address(betterproto.Message):
    street: str = betterproto.string_field(1)
    city: str = betterproto.string_field(2)
    country: str = betterproto.string_field(3)


@dataclass
class Bp1Item(betterproto.Message):
    sku: str = betterproto.string_field(1)
    quantity: int = betterproto.int32_field(2)
    unit_price: float = betterproto.double_field(3)
    note: str = betterproto.string_field(4)


@dataclass
class Bp1Order(betterproto.Message):
    id: str = betterproto.string_field(1)
    customer: str = betterproto.string_field(2)
    created_at: int = betterproto.int64_field(3)
    priority: int = betterproto.int32_field(4)
    gift: bool = betterproto.bool_field(5)
    total: float = betterproto.double_field(6)
    status: Bp1Status = betterproto.enum_field(7)
    signature: bytes = betterproto.bytes_field(8)
    shipping: Bp1Address = betterproto.message_field(9)
    labels: dict[str, str] = betterproto.map_field(
        10, betterproto.TYPE_STRING, betterproto.TYPE_STRING
    )
    items: list[Bp1Item] = betterproto.message_field(11)


# ---------------------------------------------------------------------------------------------
# (3) betterproto2 0.10.0: hand-written; field metadata via betterproto2.field(number, type, ...).
# ---------------------------------------------------------------------------------------------


class Bp2Status(betterproto2.Enum):
    STATUS_UNSPECIFIED = 0
    STATUS_PENDING = 1
    STATUS_SHIPPED = 2


@dataclass(eq=False, repr=False)
class Bp2Address(betterproto2.Message):
    street: str = betterproto2.field(1, betterproto2.TYPE_STRING)
    city: str = betterproto2.field(2, betterproto2.TYPE_STRING)
    country: str = betterproto2.field(3, betterproto2.TYPE_STRING)


@dataclass(eq=False, repr=False)
class Bp2Item(betterproto2.Message):
    sku: str = betterproto2.field(1, betterproto2.TYPE_STRING)
    quantity: int = betterproto2.field(2, betterproto2.TYPE_INT32)
    unit_price: float = betterproto2.field(3, betterproto2.TYPE_DOUBLE)
    note: str = betterproto2.field(4, betterproto2.TYPE_STRING)


@dataclass(eq=False, repr=False)
class Bp2Order(betterproto2.Message):
    id: str = betterproto2.field(1, betterproto2.TYPE_STRING)
    customer: str = betterproto2.field(2, betterproto2.TYPE_STRING)
    created_at: int = betterproto2.field(3, betterproto2.TYPE_INT64)
    priority: int = betterproto2.field(4, betterproto2.TYPE_INT32)
    gift: bool = betterproto2.field(5, betterproto2.TYPE_BOOL)
    total: float = betterproto2.field(6, betterproto2.TYPE_DOUBLE)
    status: Bp2Status = betterproto2.field(
        7, betterproto2.TYPE_ENUM, default_factory=lambda: Bp2Status.STATUS_UNSPECIFIED
    )
    signature: bytes = betterproto2.field(8, betterproto2.TYPE_BYTES)
    shipping: Bp2Address | None = betterproto2.field(9, betterproto2.TYPE_MESSAGE, optional=True)
    labels: dict[str, str] = betterproto2.field(
        10,
        betterproto2.TYPE_MAP,
        map_meta=betterproto2.map_meta(betterproto2.TYPE_STRING, betterproto2.TYPE_STRING),
    )
    items: list[Bp2Item] = betterproto2.field(11, betterproto2.TYPE_MESSAGE, repeated=True)


# ---------------------------------------------------------------------------------------------
# Sample data, identical for all three.
# ---------------------------------------------------------------------------------------------


class OrderScalars(TypedDict):
    id: str
    customer: str
    created_at: int
    priority: int
    gift: bool
    total: float
    signature: bytes


class AddressValues(TypedDict):
    street: str
    city: str
    country: str


class ItemValues(TypedDict):
    sku: str
    quantity: int
    unit_price: float
    note: str


ORDER_SCALARS = OrderScalars(
    id="ord_01HZX3K4M5N6P7Q8R9S0T1V2W3",
    customer="cus_7f3a9c2e41b84d0f",
    created_at=1_767_225_600_123,
    priority=3,
    gift=True,
    total=12_345.67,
    signature=bytes(range(64)),
)
ADDRESS = AddressValues(street="221B Baker Street", city="London", country="GB")
LABELS = {"channel": "web", "region": "eu-west-1", "campaign": "spring-sale", "tier": "gold"}
STATUS_SHIPPED = 2


def item_values(index: int) -> ItemValues:
    return ItemValues(
        sku=f"SKU-{index:06d}",
        quantity=index % 7 + 1,
        unit_price=9.99 + index * 0.25,
        note=f"item {index}: gift-wrapped, fragile",
    )


def make_official(cls: type[PbMessage]) -> PbMessage:
    order = cls(**ORDER_SCALARS, status=STATUS_SHIPPED, labels=LABELS, shipping=ADDRESS)
    items = order.items  # type: ignore[attr-defined]
    for index in range(N_ITEMS):
        items.add(**item_values(index))
    return order


def make_bp1() -> Bp1Order:
    return Bp1Order(
        **ORDER_SCALARS,
        status=Bp1Status.STATUS_SHIPPED,
        shipping=Bp1Address(**ADDRESS),
        labels=dict(LABELS),
        items=[Bp1Item(**item_values(index)) for index in range(N_ITEMS)],
    )


def make_bp2() -> Bp2Order:
    return Bp2Order(
        **ORDER_SCALARS,
        status=Bp2Status.STATUS_SHIPPED,
        shipping=Bp2Address(**ADDRESS),
        labels=dict(LABELS),
        items=[Bp2Item(**item_values(index)) for index in range(N_ITEMS)],
    )


# ---------------------------------------------------------------------------------------------
# Benchmark.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Impl:
    name: str
    encode: Callable[[], bytes]
    round_trip: Callable[[], object]


def best_per_op(round_trip: Callable[[], object], budget: float) -> float:
    """Seconds per call: calibrated so the REPEATS repeats take about `budget`; best repeat."""
    round_trip()  # warm up (lazy metadata, caches)
    number, elapsed = 1, 0.0
    while True:  # calibrate: double the loop count until one batch takes ~1/30 of the budget
        start = time.perf_counter()
        for _ in range(number):
            round_trip()
        elapsed = time.perf_counter() - start
        if elapsed >= budget / 30:
            break
        number *= 2
    number = max(1, int(number * budget / REPEATS / max(elapsed, 1e-9)))
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(number):
            round_trip()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def verify(official_cls: type[PbMessage], reference: PbMessage, impls: list[Impl]) -> None:
    """Every encoding must parse (with the official class) into the reference message."""
    ref_bytes = reference.SerializeToString()
    items = reference.items  # type: ignore[attr-defined]
    check(len(items) == N_ITEMS, "reference message lacks its items")
    for impl in impls:
        decoded = official_cls.FromString(impl.encode())
        check(decoded == reference, f"{impl.name}: encoding does not match the reference message")
    # And the other direction: each library decodes the official bytes to its own message.
    check(Bp1Order().parse(ref_bytes) == make_bp1(), "betterproto: decode mismatch")
    check(Bp2Order.parse(ref_bytes) == make_bp2(), "betterproto2: decode mismatch")


def check(ok: bool, what: str) -> None:
    """An assert that survives `python -O`."""
    if not ok:
        raise AssertionError(what)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 3 s)")
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds per implementation (default 1.0)"
    )
    args = parser.parse_args(argv)
    budget: float = args.budget if args.budget is not None else (0.1 if args.quick else 1.0)

    official_cls = build_official_order_class()
    official = make_official(official_cls)
    bp1 = make_bp1()
    bp2 = make_bp2()

    def upb_encode() -> bytes:
        return official.SerializeToString()

    def upb_round_trip() -> object:
        return official_cls.FromString(official.SerializeToString())

    def bp1_encode() -> bytes:
        return bytes(bp1)

    def bp1_round_trip() -> object:
        return Bp1Order().parse(bytes(bp1))

    def bp2_encode() -> bytes:
        return bytes(bp2)

    def bp2_round_trip() -> object:
        return Bp2Order.parse(bytes(bp2))

    backend = api_implementation.Type()
    impls = [
        Impl(f"protobuf {importlib.metadata.version('protobuf')}", upb_encode, upb_round_trip),
        Impl(
            f"betterproto2 {importlib.metadata.version('betterproto2')}",
            bp2_encode,
            bp2_round_trip,
        ),
        Impl(
            f"betterproto {importlib.metadata.version('betterproto')}", bp1_encode, bp1_round_trip
        ),
    ]
    verify(official_cls, official, impls)

    size = len(official.SerializeToString())
    print(
        f"Order: 11 fields, {N_ITEMS} items, {size} bytes encoded; "
        f"encode+decode round trip, best of {REPEATS}, ~{budget:g} s per implementation"
    )
    header = f"{'implementation':<22} {'µs/encode+decode':>17} {'vs upb':>9}  protobuf backend"
    print(header)
    print("-" * len(header))
    baseline: float | None = None
    for impl in impls:
        per_op_us = best_per_op(impl.round_trip, budget) * 1e6
        if baseline is None:
            baseline = per_op_us
        ratio = per_op_us / baseline
        print(f"{impl.name:<22} {per_op_us:>17,.1f} {ratio:>8,.2f}x  {backend}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
