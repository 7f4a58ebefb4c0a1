"""Cheaper stand-ins for two helpers grpc.aio's server runs on every call it accepts.

grpc.aio (1.85) looks both up by name in its Cython module on every call, so a stand-in there
serves every grpc.aio server of the process (as keel.runtime.cycles does for the handler lookup):

- **Its accept loop's wait.** The loop waits for the next call with `asyncio.wait` on the
  pending request of each method registered one by one and one for the rest: a single future
  on a Keel server, which registers nothing one by one (keel.runtime.dispatch). asyncio.wait's
  general checks (a set of the futures, each checked against the Coroutine ABC, the running
  loop, whose lookup makes a `getpid` system call on Python 3.11) cost about 18,000
  instructions a call. grpc's module gets an `asyncio` whose `wait` waits on that one future
  itself and hands every other case to asyncio.wait.
- **Its handler kind check.** `_is_async_handler(handler)` asks whether the handler is
  awaitable (an ABC check) before whether it is a coroutine function: about 6,000 instructions
  a call. The stand-in answers a plain `async def` function from its code flags and asks the
  original about anything else.

Both answer as the originals do. They are put in place only for the grpc releases and the
shapes they were written against (its variables checked); anything else is left as it is.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import types
from collections.abc import Callable, Collection
from typing import Any

import grpc

_WRITTEN_FOR = ("1.85.",)
"""grpc releases whose accept loop and handler check these stand in for."""
_ACCEPT_LOOP_SHAPE = (
    "self",
    "server_started",
    "rpc_state",
    "method_name",
    "rpc_tasks",
    "method_resolver",
    "pending_futures",
    "method",
    "method_bytes",
    "fut",
    "generic_fut",
    "done",
    "_",
    "completed",
    "new_fut",
    "concurrency_exceeded",
    "rpc_coro",
    "rpc_task",
)
"""`AioServer._server_main_loop`'s arguments and locals (`co_varnames`)."""
_KEYS: type[Any] = type({}.keys())
"""What the accept loop hands asyncio.wait: its pending futures' keys."""


async def wait(
    fs: Collection[Any],
    *,
    timeout: float | None = None,
    return_when: str = asyncio.ALL_COMPLETED,
) -> tuple[set[Any], set[Any]]:
    """asyncio.wait, with the accept loop's case (one future, the first to complete, no
    timeout) waited on directly: the future is neither awaited (its exception stays in it) nor
    cancelled with the waiter, as with asyncio.wait."""
    if (
        timeout is None
        and return_when == asyncio.FIRST_COMPLETED
        and type(fs) is _KEYS
        and len(fs) == 1
    ):
        (future,) = fs
        if asyncio.isfuture(future):
            if not future.done():
                waiter = future.get_loop().create_future()

                def wake(_: Any) -> None:
                    if not waiter.done():
                        waiter.set_result(None)

                future.add_done_callback(wake)
                try:
                    await waiter
                finally:
                    future.remove_done_callback(wake)
            return {future}, set()
    return await asyncio.wait(fs, timeout=timeout, return_when=return_when)


class _Asyncio(types.ModuleType):
    """asyncio as grpc's module sees it: asyncio's own names (each read once, on first use),
    with `wait` taking the accept loop's case."""

    def __init__(self) -> None:
        super().__init__("asyncio", asyncio.__doc__)
        self.wait = wait

    def __getattr__(self, name: str) -> Any:
        value = getattr(asyncio, name)
        setattr(self, name, value)
        return value


def _handler_check(original: Callable[[Any], bool]) -> Callable[[Any], bool]:
    coroutine = inspect.CO_COROUTINE
    function = types.FunctionType

    def _is_async_handler(handler: Any) -> bool:
        if type(handler) is function and handler.__code__.co_flags & coroutine:
            return True  # (what the original answers, after its awaitable check)
        return original(handler)

    _is_async_handler.keel_replaced = original  # type: ignore[attr-defined]
    return _is_async_handler


def applies(cygrpc: Any, version: str) -> bool:
    """Whether `cygrpc` (grpc's Cython module, of grpc `version`) has what these stand in for."""
    server = getattr(cygrpc, "AioServer", None)
    accept_loop = getattr(getattr(server, "_server_main_loop", None), "__code__", None)
    check = getattr(getattr(cygrpc, "_is_async_handler", None), "__code__", None)
    return (
        version.startswith(_WRITTEN_FOR)
        and getattr(accept_loop, "co_varnames", None) == _ACCEPT_LOOP_SHAPE
        and getattr(check, "co_varnames", None) == ("handler",)
        and getattr(cygrpc, "asyncio", None) is asyncio
    )


def apply(cygrpc: Any = None, version: str = grpc.__version__) -> bool:
    """Put the stand-ins in grpc's module (idempotent); whether they are in place now."""
    if cygrpc is None:
        cygrpc = importlib.import_module("grpc._cython.cygrpc")  # (grpc's private module)
    if isinstance(getattr(cygrpc, "asyncio", None), _Asyncio):
        return True
    if not applies(cygrpc, version):
        return False
    cygrpc._is_async_handler = _handler_check(cygrpc._is_async_handler)
    cygrpc.asyncio = _Asyncio()
    return True
