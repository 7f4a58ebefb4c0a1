"""pytest fixtures for events: a real nats-server with JetStream, and waiting on conditions.

from keel.testing.nats import nats_broker, eventually  # noqa: F401 (fixture)

async def test_x(nats_broker):
    os.environ["KEEL_NATS_URL"] = nats_broker.url
    nats_broker.kill(); nats_broker.restart()  # a crash, then the same port and store
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from keel.events.broker import Broker, start_broker

__all__ = ["Broker", "eventually", "nats_broker", "start_broker"]


@pytest.fixture
def nats_broker(tmp_path: Path) -> Iterator[Broker]:
    """A nats-server with JetStream on a free port, storing under the test's tmp_path."""
    broker = start_broker(tmp_path / "nats")
    try:
        yield broker
    finally:
        broker.stop()


async def eventually(
    condition: Callable[[], Awaitable[bool]],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.02,
) -> None:
    """Wait until `condition()` is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
