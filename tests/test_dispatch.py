"""keel.Server serves every method through one table: grpc.aio's accept loop waits on one
pending call however many methods there are, and every method is still answered."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Iterable
from typing import Any

import grpc
import grpc.aio
import keel
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from keel.runtime import propagation
from keel.runtime.dispatch import MethodTable

from tests.servers.kitchen_server import Front, Kitchen, kitchen_keel, kitchen_pb2


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


class _Uncalled:
    """A call context whose metadata must not be read again."""

    def invocation_metadata(self) -> Any:
        raise AssertionError("the metadata was read from the call again")

    def time_remaining(self) -> None:
        return None


async def test_the_metadata_read_for_the_lookup_is_bound_to_that_call_alone() -> None:
    sent = (("x-request-id", "req-1"),)
    table = MethodTable(keep_metadata=True)
    table.add_registered_method_handlers("pkg.Svc", {"Get": _handler()})

    async def handled() -> tuple[str, str]:
        details = _Details("/pkg.Svc/Get")
        details.invocation_metadata = sent
        assert table.service(details) is not None
        call = propagation.bind("pkg.Svc", _Uncalled())
        started = asyncio.ensure_future(started_later())  # a task the call starts
        return call.correlation_id, await started

    async def started_later() -> str:
        return propagation.bind("pkg.Svc", _Fixed()).correlation_id

    assert await asyncio.ensure_future(handled()) == ("req-1", "req-2")


class _Fixed(_Uncalled):
    def invocation_metadata(self) -> Any:
        return (("x-request-id", "req-2"),)


async def test_a_table_that_keeps_nothing_leaves_the_call_to_be_read() -> None:
    table = MethodTable()
    table.add_registered_method_handlers("pkg.Svc", {"Get": _handler()})

    async def handled() -> str:
        details = _Details("/pkg.Svc/Get")
        details.invocation_metadata = (("x-request-id", "req-1"),)
        table.service(details)
        return propagation.bind("pkg.Svc", _Fixed()).correlation_id

    assert await asyncio.ensure_future(handled()) == "req-2"


_cygrpc: Any = importlib.import_module("grpc._cython.cygrpc")  # (what grpc.aio's lookup takes)


class _Relabel(grpc.aio.ServerInterceptor):
    """Tells the method lookup another request id than the caller sent."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        changed = tuple(
            (key, "relabelled" if key == "x-request-id" else value)
            for key, value in details.invocation_metadata
        )

        return await continuation(_cygrpc._HandlerCallDetails(details.method, changed))


async def test_with_grpc_interceptors_a_handler_reads_what_the_caller_sent() -> None:
    front = Front()
    async with (
        keel.Server([front], port=0, log_calls=False, interceptors=[_Relabel()]) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        front.pantry_target = "127.0.0.1:1"  # (records the correlation id, then fails)
        kitchen: Any = kitchen_keel.KitchenServiceClient(channel)
        with pytest.raises(keel.errors.KeelError):
            await kitchen.cook(
                kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name="soup")),
                metadata=(("x-request-id", "sent-by-the-caller"),),
            )
    assert front.correlation_ids == ["sent-by-the-caller"]
