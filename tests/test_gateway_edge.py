"""Gateway edge policy: CORS and rate limiting per client and route."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest
from keel.runtime.config import Settings

from tests.test_gateway import call
from tests.test_gateway_auth import _serve

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
async def gateway() -> AsyncIterator[str]:
    settings = Settings(rate_limit=2.0, rate_burst=3, cors_origins="https://shop.example")
    async for url in _serve(settings):
        yield url


async def test_rate_limit_per_client_and_route(gateway: str) -> None:
    statuses = [(await call(f"{gateway}/v1/products/p_mug")).status for _ in range(5)]
    assert statuses[:3] == [200, 200, 200]  # the burst
    assert 429 in statuses[3:]
    limited = await call(f"{gateway}/v1/products/p_mug")
    assert limited.status == 429
    assert limited.headers["retry-after"] == "1"
    assert limited.body["code"] == 8  # type: ignore[index]  # RESOURCE_EXHAUSTED
    # Another route has its own bucket.
    assert (await call(f"{gateway}/v1/products")).status == 200


async def test_cors_for_a_configured_origin(gateway: str) -> None:
    reply = await call(f"{gateway}/v1/products", headers={"Origin": "https://shop.example"})
    assert reply.headers["access-control-allow-origin"] == "https://shop.example"
    other = await call(
        f"{gateway}/v1/products?pageSize=1", headers={"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers


def _preflight(url: str, origin: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        url,
        method="OPTIONS",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    try:
        with _DIRECT.open(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


async def test_cors_preflight(gateway: str) -> None:
    import asyncio  # noqa: PLC0415

    code, headers = await asyncio.to_thread(
        _preflight, f"{gateway}/v1/products/p_mug", "https://shop.example"
    )
    assert code == 204
    assert headers["access-control-allow-methods"] == "GET, PATCH"
    assert headers["access-control-allow-headers"] == "authorization, content-type"
    refused, _ = await asyncio.to_thread(
        _preflight, f"{gateway}/v1/products/p_mug", "https://evil.example"
    )
    assert refused == 403
