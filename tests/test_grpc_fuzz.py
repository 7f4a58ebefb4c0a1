"""The gRPC side of the example services never crashes on bad input.

Random, truncated, mutated and oversized request bytes, and metadata Keel cannot use, go to every
method of catalog, orders and payments through a generic channel (raw bytes, no serializer).
Bytes that are no message answer INVALID_ARGUMENT with an ErrorInfo; bytes over the server's
receive limit RESOURCE_EXHAUSTED; anything that decodes gets an answer of the service, never
UNKNOWN or INTERNAL; no call hangs; and every server still answers afterwards. Inputs come from
a seeded random generator, so a failure repeats; the whole run takes a few seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import keel
import keel.testing
import pytest
from acme.catalog.v1 import catalog_keel, catalog_pb2
from acme.orders.v1 import orders_keel
from acme.payments.v1 import payments_keel
from buf.validate import validate_pb2
from catalog.service import CatalogService
from catalog.store import MemoryStore, seed
from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from orders.service import OrderService
from payments.service import PaymentService

SPECS = (catalog_keel.CATALOG_SERVICE, orders_keel.ORDER_SERVICE, payments_keel.PAYMENT_SERVICE)
METHODS = [(spec.name, method) for spec in SPECS for method in spec.methods]
INPUTS_PER_METHOD = 40
MAX_RECEIVE = 4 * 1024 * 1024  # grpc's default receive limit, which keel.Server keeps
CALL_TIMEOUT = 10.0  # a call still open after this has hung
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}
STRINGS = ("", "0", "²", "7", "-1", "9" * 40, "p_mug", "o-1", "tok_visa", "EUR", "\x00", "é" * 300)
INTS = (0, 1, -1, 2**31 - 1, -(2**31), 5000)
BAD_METADATA = (
    ("x-keel-claims", "{not json"),
    ("x-keel-claims", "[1, 2]"),
    ("x-keel-subject", ""),
    ("traceparent", "00-zz-garbage"),
    ("tracestate", "=,=,="),
    ("x-request-id", "r" * 300),
    ("grpc-timeout", "soon"),
    ("x-keel-caller-bin", b"\xff\x00\xfe"),
    ("x-request-id-bin", b"\x00" * 64),
)


def _scalar(field: Any, rng: random.Random) -> Any:
    """A value for a scalar `field` (a FieldDescriptor), from the edges of its type."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return rng.choice(STRINGS)
    if kind == FieldDescriptor.TYPE_BYTES:
        return rng.randbytes(rng.randrange(8))
    if kind == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice((0.0, -1.5, 1e300, math.inf, math.nan))
    if kind == FieldDescriptor.TYPE_ENUM:
        return rng.choice([v.number for v in field.enum_type.values] + [99])
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return rng.choice((0, 1, 2**32 - 1))
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return rng.choice((0, 1, 2**64 - 1))
    if kind in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return rng.choice((*INTS, 2**63 - 1))
    return rng.choice(INTS)


def _fill(message: Message, rng: random.Random, depth: int = 0) -> Message:
    """`message` with random values in a random choice of its fields (nested ones too)."""
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.3:
            continue
        value = getattr(message, field.name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
            for _ in range(rng.randrange(3)):
                key = _scalar(key_field, rng)
                if value_field.message_type is not None:
                    _fill(value[key], rng, depth + 1)
                else:
                    value[key] = _scalar(value_field, rng)
        elif entry is not None:
            if depth > 3:
                continue
            for _ in range(rng.randrange(4) if field.is_repeated else 1):
                _fill(value.add() if field.is_repeated else value, rng, depth + 1)
        elif field.is_repeated:
            value.extend(_scalar(field, rng) for _ in range(rng.randrange(4)))
        else:
            setattr(message, field.name, _scalar(field, rng))
    return message


def _payloads(request_type: type[Message], rng: random.Random) -> list[bytes]:
    """Random bytes, and random messages whole, truncated and with bytes flipped."""
    found = []
    for _ in range(INPUTS_PER_METHOD // 4):
        whole = _fill(request_type(), rng).SerializeToString()
        flipped = bytearray(whole)
        for _ in range(1 + len(flipped) // 8):
            if flipped:
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        found += [
            rng.randbytes(rng.randrange(64)),
            whole,
            whole[: rng.randrange(len(whole) + 1)],
            bytes(flipped),
        ]
    return found


def _decodes(request_type: type[Message], payload: bytes) -> bool:
    try:
        request_type.FromString(payload)
    except DecodeError:
        return False
    return True


def _rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
    return status


def _says_what_was_wrong(status: status_pb2.Status | None) -> bool:
    """Whether the status carries a BadRequest or an ErrorInfo."""
    kinds = {"google.rpc.BadRequest", "google.rpc.ErrorInfo"}
    return status is not None and any(d.TypeName() in kinds for d in status.details)


async def _call(
    channel: grpc.aio.Channel, method: Any, payload: bytes, metadata: Any = ()
) -> grpc.StatusCode:
    """Send raw bytes to `method`; the code it ends with (a stream that sends a message has
    answered: it may go on for as long as what it watches, so it is cancelled then).
    INVALID_ARGUMENT must say what was wrong (a BadRequest or an ErrorInfo)."""
    failed: grpc.aio.AioRpcError | None = None
    try:
        if method.kind.server_streaming:
            stream: Any = channel.unary_stream(method.path)
            call = stream(payload, timeout=CALL_TIMEOUT, metadata=metadata)
            async for _ in call:
                call.cancel()
                break
        else:
            unary: Any = channel.unary_unary(method.path)
            await unary(payload, timeout=CALL_TIMEOUT, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        failed = error
    if failed is None:
        return grpc.StatusCode.OK
    code = failed.code()
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        assert _says_what_was_wrong(_rich_status(failed)), (method.path, payload, failed)
    return code


@pytest.fixture
async def channels() -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    services = (OrderService(), CatalogService(seed(MemoryStore())), PaymentService())
    async with keel.testing.cluster(*services) as running:
        opened = {
            name: grpc.aio.insecure_channel(running.address(name)) for name in running.servers
        }
        try:
            yield opened
        finally:
            for channel in opened.values():
                await channel.close()


async def test_bad_bytes_never_crash_a_service(channels: dict[str, grpc.aio.Channel]) -> None:
    rng = random.Random(20261125)
    seen: dict[grpc.StatusCode, int] = {}
    for service, method in METHODS:
        for payload in _payloads(method.request_type, rng):
            code = await _call(channels[service], method, payload)
            assert code not in NEVER, (method.path, payload, code)
            if not _decodes(method.request_type, payload):
                assert code is grpc.StatusCode.INVALID_ARGUMENT, (method.path, payload, code)
            seen[code] = seen.get(code, 0) + 1
    # The inputs reached past decoding and validation, into the services' own answers.
    assert {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND} <= set(seen)
    await _still_answering(channels)


async def test_oversized_requests_are_resource_exhausted(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    payload = b"\x0a" + b"\xff" * MAX_RECEIVE  # over the limit before anything is decoded
    for service, method in METHODS:
        assert await _call(channels[service], method, payload) is grpc.StatusCode.RESOURCE_EXHAUSTED
    await _still_answering(channels)


@pytest.mark.parametrize(("key", "value"), BAD_METADATA, ids=[k for k, _ in BAD_METADATA])
async def test_metadata_keel_cannot_use_is_no_crash(
    channels: dict[str, grpc.aio.Channel], key: str, value: str | bytes
) -> None:
    request = catalog_pb2.GetProductRequest(product_id="p_mug").SerializeToString()
    get_product = catalog_keel.CATALOG_SERVICE.method("GetProduct")
    code = await _call(channels[get_product.service], get_product, request, [(key, value)])
    assert code is grpc.StatusCode.OK
    rng = random.Random(key)
    for service, method in METHODS:
        payload = _fill(method.request_type(), rng).SerializeToString()
        code = await _call(channels[service], method, payload, [(key, value)])
        assert code not in NEVER, (method.path, key, code)


async def _still_answering(channels: dict[str, grpc.aio.Channel]) -> None:
    for name, channel in channels.items():
        health: Any = health_pb2_grpc.HealthStub(channel)  # stubs are typed for sync channels
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _divide_request() -> type[Message]:
    """A message whose rule divides by its field `n`: on n = 0 the rule cannot be evaluated."""
    pool = descriptor_pool.Default()
    try:
        found = pool.FindMessageTypeByName("keeltest.DivideRequest")
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name="keeltest/divide.proto",
            package="keeltest",
            syntax="proto3",
            dependency=["buf/validate/validate.proto"],
        )
        field = proto.message_type.add(name="DivideRequest").field.add(
            name="n",
            number=1,
            type=FieldDescriptor.TYPE_INT64,
            label=FieldDescriptor.LABEL_OPTIONAL,
        )
        field.options.Extensions[validate_pb2.field].cel.add(
            id="divide.positive", message="100 / n must be positive", expression="100 / this > 0"
        )
        pool.Add(proto)
        found = pool.FindMessageTypeByName("keeltest.DivideRequest")
    made: type[Message] = message_factory.GetMessageClass(found)
    return made


async def test_a_rule_that_cannot_be_evaluated_is_invalid_argument() -> None:
    request_type = _divide_request()
    method = keel.MethodSpec(
        name="Divide",
        python_name="divide",
        service="keeltest.Divider",
        kind=keel.RpcKind.UNARY_UNARY,
        request_type=request_type,
        response_type=empty_pb2.Empty,
    )

    class Divider(keel.ServiceBase):
        __keel_service__ = keel.ServiceSpec("keeltest.Divider", "keeltest/divide.proto", (method,))

        async def divide(self, request: Any, context: keel.Context) -> empty_pb2.Empty:
            return empty_pb2.Empty()

    async with (
        keel.Server([Divider()], port=0, log_calls=False) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        codes = [
            await _call(channel, method, request_type(n=n).SerializeToString()) for n in (5, -5, 0)
        ]
        raw: Any = channel.unary_unary(method.path)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(b"", timeout=CALL_TIMEOUT)
    assert codes == [grpc.StatusCode.OK, *[grpc.StatusCode.INVALID_ARGUMENT] * 2]
    status = _rich_status(caught.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, dict(info.metadata)) == (
        "VALIDATION_ERROR",
        {"message": "keeltest.DivideRequest"},
    )
    assert status.message == (
        "invalid keeltest.DivideRequest: error evaluating divide.positive: divide by zero"
    )


async def test_a_unicode_digit_page_token_is_invalid_argument(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    calls = [
        (catalog_keel.CATALOG_SERVICE, "ListProducts", {}),
        (orders_keel.ORDER_SERVICE, "ListOrders", {"customer_id": "c_1"}),
    ]
    for spec, name, fields in calls:
        method = spec.method(name)
        payload = method.request_type(page_token="²", **fields).SerializeToString()
        assert await _call(channels[spec.name], method, payload) is grpc.StatusCode.INVALID_ARGUMENT
