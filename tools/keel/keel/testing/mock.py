"""The `keel_mock` pytest fixture: mocks of services (keel.mock.MockServer) in the test's
event loop, for code that calls services not built yet.

    async def test_checkout(keel_mock):
        async with keel_mock("acme.payments.v1.PaymentService", seed=1) as payments:
            payments.stub("AuthorizePayment", error={"code": "FAILED_PRECONDITION"})
            ...  # call the code under test with payments.address
            assert payments.calls("AuthorizePayment")

The generated code is found under `<rootdir>/gen` unless `gen=` says otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    from keel.mock import MockServer


@pytest_asyncio.fixture
async def keel_mock(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., MockServer]]:
    """`keel_mock(*services, **MockServer options)`: a MockServer to `async with` (one not
    stopped by the test is stopped after it)."""
    from keel.mock import MockServer  # noqa: PLC0415 (gRPC servers load for tests using it)

    made: list[MockServer] = []
    default_gen = request.config.rootpath / "gen"

    def make(*services: str, gen: Path | None = None, **options: Any) -> MockServer:
        options.setdefault("log_calls", False)
        mock = MockServer(services, gen=gen or default_gen, **options)
        made.append(mock)
        return mock

    yield make
    for mock in made:
        await mock.stop(0)
