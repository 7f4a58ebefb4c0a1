"""A call a Keel server accepts leaves no reference cycle behind (keel.runtime.cycles): nothing
for the garbage collector, and every call still finds its handler, through interceptors too."""

from __future__ import annotations

import gc
import importlib
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import keel
import pytest
from keel.runtime import cycles

from tests.servers.kitchen_server import Kitchen, kitchen_keel, kitchen_pb2

cygrpc: Any = importlib.import_module("grpc._cython.cygrpc")


@pytest.fixture
def saved_garbage() -> Iterator[list[Any]]:
    """gc.garbage, holding every object a collection finds unreachable from now on."""
    flags = gc.get_debug()
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()


class Counting(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self.methods.append(details.method)
        return await continuation(details)


@pytest.mark.parametrize("interceptors", [0, 2])
async def test_served_calls_leave_nothing_for_the_garbage_collector(
    saved_garbage: list[Any], interceptors: int
) -> None:
    chain = [Counting() for _ in range(interceptors)]
    async with (
        keel.Server([Kitchen()], port=0, log_calls=False, interceptors=chain) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        kitchen = kitchen_keel.KitchenServiceClient(channel)
        for _ in range(20):
            await kitchen.cook(kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name="soup")))
        unknown: Any = channel.unary_unary("/kitchen.v1.KitchenService/Nope")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unknown(b"")
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        gc.collect()
    left = [o for o in saved_garbage if isinstance(o, cygrpc._HandlerCallDetails)]
    assert left == [], (
        f"{len(left)} calls left their handler lookup in a cycle: grpc {grpc.__version__} is not"
        " one keel.runtime.cycles was written for; check whether grpc still needs it"
    )
    for interceptor in chain:  # each saw every call, the unknown method's too
        assert interceptor.methods.count("/kitchen.v1.KitchenService/Cook") == 20
        assert interceptor.methods[-1] == "/kitchen.v1.KitchenService/Nope"


def test_it_applies_to_the_function_it_was_written_for_alone() -> None:
    assert cycles.apply() is True  # grpc as pinned
    assert cycles.apply() is True  # (once)
    original = cygrpc._find_method_handler.keel_replaced

    class Module:
        _HandlerCallDetails = cygrpc._HandlerCallDetails
        _run_interceptor = cygrpc._run_interceptor
        _find_method_handler = original

    assert cycles.applies(Module, grpc.__version__)
    assert not cycles.applies(Module, "1.86.0")  # another release: left alone
    assert cycles.apply(Module, "1.86.0") is False
    assert Module._find_method_handler is original

    async def changed(method: str, metadata: Any, resolver: Any, interceptors: Any) -> None:
        return None

    Module._find_method_handler = changed
    assert cycles.apply(Module, grpc.__version__) is False  # another shape: left alone
    assert Module._find_method_handler is changed
