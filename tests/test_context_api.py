"""keel.Context: grpc.aio's servicer context plus the correlation id, the verified caller
(subject and claims) and the calling service, with docs/runtime.md's example run as written."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import keel
import pytest

from tests.servers.kitchen_server import kitchen_keel, kitchen_pb2
from tests.test_interceptors import doc_example

CLAIMS = {"sub": "u-1", "scope": "orders.read other"}


def _caller(subject: str = "u-1", claims: Any = CLAIMS, request_id: str = "req-7") -> Any:
    claims_text = claims if isinstance(claims, str) else json.dumps(claims)
    return [
        ("x-request-id", request_id),
        ("x-keel-subject", subject),
        ("x-keel-claims", claims_text),
    ]


@pytest.fixture
async def orders() -> AsyncIterator[Any]:
    from acme.orders.v1 import orders_keel  # noqa: PLC0415 (gen/ is on pythonpath)

    example = doc_example("context.claims.get")
    async with (
        keel.Server([example["Orders"]()], port=0, log_calls=False) as server,
        orders_keel.OrderServiceClient.connect(f"127.0.0.1:{server.port}") as client,
    ):
        yield client


async def test_the_docs_example_reads_the_verified_caller(orders: Any) -> None:
    from acme.orders.v1 import orders_pb2  # noqa: PLC0415

    request = orders_pb2.GetOrderRequest(order_id="o-1")
    reply = await orders.get_order(request, metadata=_caller())
    assert reply.order.customer_id == "u-1"
    with pytest.raises(keel.errors.PermissionDenied) as denied:
        await orders.get_order(request, metadata=_caller(claims={"sub": "u-1"}))
    assert denied.value.details() == "u-1 may not read orders (request req-7)"
    with pytest.raises(keel.errors.PermissionDenied) as anonymous:
        await orders.get_order(request, metadata=[("x-request-id", "req-8")])
    assert anonymous.value.details() == "None may not read orders (request req-8)"


@pytest.mark.parametrize(
    ("claims", "problem"),
    [("{not json", "is not JSON"), ("[1, 2]", "is not a JSON object")],
    ids=["not-json", "not-an-object"],
)
async def test_malformed_claims_are_invalid_argument(
    orders: Any, claims: str, problem: str
) -> None:
    from acme.orders.v1 import orders_pb2  # noqa: PLC0415

    request = orders_pb2.GetOrderRequest(order_id="o-1")
    with pytest.raises(keel.errors.InvalidArgument) as caught:
        await orders.get_order(request, metadata=_caller(claims=claims))
    error = caught.value
    assert error.details() == f"metadata x-keel-claims {problem}"
    assert (error.reason, error.domain, error.metadata) == (
        "MALFORMED_METADATA",
        "keel",
        {"key": "x-keel-claims"},
    )


class Pantry(kitchen_keel.PantryServiceBase):  # type: ignore[misc]
    """Records what its context says about each call; sets a trailer through it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def count(self, request: Any, context: keel.Context) -> Any:
        self.seen.append(
            {
                "context": isinstance(context, grpc.aio.ServicerContext),
                "correlation_id": context.correlation_id,
                "subject": context.subject,
                "claims": dict(context.claims),
                "calling_service": context.calling_service,
                "peer": context.peer().startswith("ipv4:127.0.0.1:"),
                "remaining": context.time_remaining() > 0,
            }
        )
        context.set_trailing_metadata((("x-served-by", "pantry"),))
        refuse = dict(context.invocation_metadata() or ()).get("x-refuse")
        if isinstance(refuse, str):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"refused {refuse}")
        return kitchen_pb2.CountResponse(count=len(self.seen))


class Front(kitchen_keel.KitchenServiceBase):  # type: ignore[misc]
    """Cook calls the pantry."""

    def __init__(self, pantry_target: str) -> None:
        self.pantry_target = pantry_target
        self.correlation_ids: list[str] = []

    async def cook(self, request: Any, context: keel.Context) -> Any:
        self.correlation_ids.append(context.correlation_id)
        async with kitchen_keel.PantryServiceClient.connect(self.pantry_target) as pantry:
            await pantry.count(kitchen_pb2.CountRequest())
        return kitchen_pb2.CookResponse(dish=request.dish)


@pytest.fixture
async def pantry() -> AsyncIterator[tuple[Pantry, str]]:
    impl = Pantry()
    async with keel.Server([impl], port=0, log_calls=False) as server:
        yield impl, f"127.0.0.1:{server.port}"


async def test_the_caller_travels_on_to_downstream_calls(pantry: tuple[Pantry, str]) -> None:
    recorder, pantry_target = pantry
    front = Front(pantry_target)
    async with (
        keel.Server([front], port=0, log_calls=False) as server,
        kitchen_keel.KitchenServiceClient.connect(f"127.0.0.1:{server.port}") as client,
    ):
        await client.cook(kitchen_pb2.CookRequest(), metadata=_caller())
        await client.cook(kitchen_pb2.CookRequest())
    with_caller, without = recorder.seen
    assert with_caller == {
        "context": True,
        "correlation_id": "req-7",
        "subject": "u-1",
        "claims": CLAIMS,
        "calling_service": "kitchen.v1.KitchenService",
        "peer": True,
        "remaining": True,
    }
    assert (without["subject"], without["claims"]) == (None, {})
    assert without["correlation_id"] == front.correlation_ids[1]  # made at the first service
    assert len(without["correlation_id"]) == 32


async def test_grpc_context_methods_work_through_keel_context(pantry: tuple[Pantry, str]) -> None:
    recorder, target = pantry
    async with grpc.aio.insecure_channel(target) as channel:
        count = channel.unary_unary(
            "/kitchen.v1.PantryService/Count",
            request_serializer=kitchen_pb2.CountRequest.SerializeToString,
            response_deserializer=kitchen_pb2.CountResponse.FromString,
        )
        call = count(kitchen_pb2.CountRequest(), timeout=5)
        assert (await call).count == 1
        assert ("x-served-by", "pantry") in tuple(await call.trailing_metadata() or ())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await count(kitchen_pb2.CountRequest(), timeout=5, metadata=[("x-refuse", "r-1")])
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details() == "refused r-1"
    assert recorder.seen[0]["calling_service"] == ""
