"""grpc.aio's accept loop and handler check, cheaper (keel.runtime.fastpaths): the stand-ins
answer as the originals do, a Keel server's calls take them, and every other case is handed on."""

from __future__ import annotations

import asyncio
import functools
import importlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import keel
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from keel.runtime import fastpaths

from tests.servers.kitchen_server import Kitchen, kitchen_keel, kitchen_pb2

cygrpc: Any = importlib.import_module("grpc._cython.cygrpc")


@pytest.fixture
def asyncio_waits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many futures each call of asyncio.wait was given, from now on."""
    sizes: list[int] = []
    real = asyncio.wait

    async def counted(fs: Any, **options: Any) -> Any:
        sizes.append(len(fs))
        return await real(fs, **options)

    monkeypatch.setattr(asyncio, "wait", counted)
    return sizes


def pending(loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Future[Any], Any]:
    """A future and the keys view the accept loop would hand to wait for it."""
    future: asyncio.Future[Any] = loop.create_future()
    return future, {future: None}.keys()


async def test_one_future_is_waited_on_until_done_and_its_error_left_in_it() -> None:
    future, keys = pending(asyncio.get_running_loop())
    waiting = asyncio.ensure_future(fastpaths.wait(keys, return_when=asyncio.FIRST_COMPLETED))
    await asyncio.sleep(0)
    assert not waiting.done()
    future.set_exception(LookupError("no call"))
    done, still = await waiting
    assert (done, still) == ({future}, set())
    with pytest.raises(LookupError):
        future.result()


async def test_a_future_already_done_is_answered_at_once() -> None:
    future, keys = pending(asyncio.get_running_loop())
    future.set_result("call")
    assert await fastpaths.wait(keys, return_when=asyncio.FIRST_COMPLETED) == ({future}, set())


async def test_cancelling_the_wait_leaves_the_future_pending_and_unwatched() -> None:
    future, keys = pending(asyncio.get_running_loop())
    waiting = asyncio.ensure_future(fastpaths.wait(keys, return_when=asyncio.FIRST_COMPLETED))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not future.done()
    assert future.remove_done_callback(lambda _: None) == 0  # (nothing of the wait's left on it)
    future.cancel()


async def test_every_other_case_is_asyncio_wait(asyncio_waits: list[int]) -> None:
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    second.set_result(None)
    both = {first: None, second: None}.keys()
    assert await fastpaths.wait(both, return_when=asyncio.FIRST_COMPLETED) == (
        {second},
        {first},
    )
    alone = {first: None}.keys()
    assert await fastpaths.wait(alone, timeout=0.001) == (set(), {first})  # (a timeout)
    assert await fastpaths.wait([second], return_when=asyncio.FIRST_COMPLETED) == (
        {second},
        set(),
    )
    assert asyncio_waits == [2, 1, 1]
    coroutine = asyncio.sleep(0)
    with pytest.raises(TypeError):  # asyncio.wait's own refusal
        await fastpaths.wait({coroutine: None}.keys(), return_when=asyncio.FIRST_COMPLETED)
    coroutine.close()
    first.cancel()


async def _coroutine_function(request: Any, context: Any) -> None:
    return None


def _function(request: Any, context: Any) -> None:
    return None


async def _generator_function(request: Any, context: Any) -> AsyncIterator[None]:
    yield None


class _Handlers:
    async def method(self, request: Any, context: Any) -> None:
        return None

    async def __call__(self, request: Any, context: Any) -> None:
        return None


def test_the_handler_check_answers_as_grpc_does() -> None:
    assert fastpaths.apply() is True  # grpc as pinned
    check = cygrpc._is_async_handler
    original = check.keel_replaced
    loop = asyncio.new_event_loop()
    coroutine = _coroutine_function(None, None)
    handlers = [
        _coroutine_function,
        _function,
        _generator_function,
        lambda request, context: None,
        functools.partial(_coroutine_function, None),
        _Handlers().method,
        _Handlers(),
        coroutine,
        loop.create_future(),
        None,
    ]
    try:
        answers = [(check(handler), original(handler)) for handler in handlers]
    finally:
        coroutine.close()
        loop.close()
    assert [mine for mine, _ in answers] == [theirs for _, theirs in answers]
    assert answers[0] == (True, True)
    assert answers[1] == (False, False)


async def test_a_keel_server_accepts_its_calls_without_asyncio_wait(
    asyncio_waits: list[int],
) -> None:
    async with (
        keel.Server([Kitchen()], port=0, log_calls=False) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        kitchen = kitchen_keel.KitchenServiceClient(channel)
        for _ in range(5):
            cooked = await kitchen.cook(kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name="soup")))
            assert cooked.dish.name == "soup"
    assert isinstance(cygrpc.asyncio, fastpaths._Asyncio)
    assert asyncio_waits == []  # (grpc's own loop: about 18,000 instructions a call)


async def test_a_server_with_methods_registered_one_by_one_is_served_as_before(
    asyncio_waits: list[int],
) -> None:
    assert fastpaths.apply() is True
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)
            checked = await stub.Check(health_pb2.HealthCheckRequest())
            assert checked.status == health_pb2.HealthCheckResponse.SERVING
            unknown: Any = channel.unary_unary("/nope.v1.Nope/Nope")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await unknown(b"")
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(0)
    assert asyncio_waits  # (handed on)
    assert all(size > 1 for size in asyncio_waits)


def test_it_applies_to_what_it_was_written_for_alone() -> None:
    assert fastpaths.apply() is True
    assert fastpaths.apply() is True  # (once)
    assert cygrpc.asyncio.CancelledError is asyncio.CancelledError  # asyncio's own names

    class Module:
        AioServer = cygrpc.AioServer
        _is_async_handler = cygrpc._is_async_handler.keel_replaced
        asyncio = asyncio

    assert fastpaths.applies(Module, grpc.__version__)
    assert not fastpaths.applies(Module, "1.86.0")  # another release: left alone
    assert fastpaths.apply(Module, "1.86.0") is False
    assert Module.asyncio is asyncio

    class Changed:
        async def _server_main_loop(self, server_started: Any) -> None:
            return None

    Module.AioServer = Changed
    assert fastpaths.apply(Module, grpc.__version__) is False  # another shape: left alone
    assert Module.asyncio is asyncio
