"""The deadline of a unary call made from a REST request in the service (keel.gateway.local):
set when the method first waits, enforced as grpc enforces it."""

from __future__ import annotations

import asyncio

import pytest
from keel.gateway.local import HttpCallContext, _expired, _within_deadline


async def _call(method: object, timeout: float) -> tuple[object, bool]:
    """What awaiting `method` under a deadline gave, and whether the deadline passed."""
    context = HttpCallContext((), timeout, None)
    try:
        return await _within_deadline(method, context), context.expired
    except asyncio.CancelledError:
        return "cancelled", _expired(context)


async def test_a_method_that_answers_without_waiting_returns_its_answer() -> None:
    async def answer() -> int:
        return 1

    assert await _call(answer(), 0.001) == (1, False)


async def test_a_method_that_waits_returns_its_answer_before_the_deadline() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 2

    assert await _call(answer(), 30) == (2, False)


async def test_a_waiting_method_is_cancelled_when_the_deadline_passes() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    assert await _call(forever(), 0.01) == ("cancelled", True)


async def test_a_method_that_waits_again_when_cancelled_still_ends_cancelled() -> None:
    cleaned = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # (cleaning up)
            cleaned.set()
            raise

    assert await _call(stubborn(), 0.01) == ("cancelled", True)
    assert cleaned.is_set()


async def test_a_cancel_from_outside_is_not_the_deadline() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(_call(forever(), 30))
    await started.wait()
    task.cancel()
    assert await task == ("cancelled", False)


async def test_an_awaitable_that_is_not_a_coroutine_is_awaited_too() -> None:
    future = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.set_result, 3)
    assert await _call(future, 30) == (3, False)


async def test_an_error_raised_before_waiting_goes_to_the_caller() -> None:
    async def refuse() -> None:
        raise LookupError("no such thing")

    with pytest.raises(LookupError):
        await _call(refuse(), 30)
