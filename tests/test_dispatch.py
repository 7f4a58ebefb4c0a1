"""keel.Server serves every method through one table: grpc.aio's accept loop waits on one
pending call however many methods there are, and every method is still answered."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import grpc
import grpc.aio
import keel
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from keel.runtime.dispatch import MethodTable

from tests.servers.kitchen_server import Kitchen, kitchen_keel, kitchen_pb2


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata: tuple[tuple[str, str | bytes], ...] = ()


def _handler() -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(lambda request, context: request)


def test_table_finds_by_path_then_asks_generic_handlers() -> None:
    table = MethodTable()
    served, fallback = _handler(), _handler()
    table.add_registered_method_handlers("pkg.Svc", {"Get": served})
    asked: list[str] = []

    class Fallback(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> Any:
            asked.append(details.method)
            return fallback if details.method == "/pkg.Other/Get" else None

    table.add_generic_rpc_handlers([Fallback()])
    assert table.service(_Details("/pkg.Svc/Get")) is served
    assert asked == []  # the table answered; the generic handler was not asked
    assert table.service(_Details("/pkg.Other/Get")) is fallback
    assert table.service(_Details("/pkg.Svc/Nope")) is None
    assert asked == ["/pkg.Other/Get", "/pkg.Svc/Nope"]


def test_a_path_served_twice_is_refused() -> None:
    table = MethodTable()
    table.add_registered_method_handlers("pkg.Svc", {"Get": _handler()})
    with pytest.raises(ValueError, match=r"/pkg\.Svc/Get is served twice"):
        table.add_registered_method_handlers("pkg.Svc", {"Get": _handler()})


async def test_accept_loop_waits_on_one_call_and_every_method_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waited: list[int] = []
    wait = asyncio.wait

    async def counted(futures: Iterable[Any], **options: Any) -> Any:
        pending = list(futures)
        waited.append(len(pending))
        return await wait(pending, **options)

    # grpc.aio's accept loop looks asyncio.wait up on every call it accepts
    monkeypatch.setattr(asyncio, "wait", counted)
    async with (
        keel.Server([Kitchen(), kitchen_keel.PantryServiceBase()], port=0) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        health: Any = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        kitchen = kitchen_keel.KitchenServiceClient(channel)
        for name in ("soup", "bread"):
            await kitchen.cook(kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name=name)))
        unknown: Any = channel.unary_unary("/kitchen.v1.KitchenService/Nope")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unknown(b"")
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # (a grpc.aio that accepts calls without asyncio.wait waits on none)
    assert all(size == 1 for size in waited), waited
