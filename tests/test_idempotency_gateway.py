"""Idempotency keys through the REST gateway: the `Idempotency-Key` header reaches the service."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import keel.testing
import pytest
from keel.data import Database
from keel.gateway import Gateway, RouteTable
from sqlalchemy import func, select

from tests.conftest import serve_asgi
from tests.sagas import ledger_server
from tests.sagas.support import generated, modules

pb2, ledger_keel = modules()
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Edge:
    url: str
    ledger: Any
    db: Database

    async def post(self, body: dict[str, Any], key: str | None = None) -> tuple[int, Any]:
        headers = {"content-type": "application/json"}
        if key is not None:
            headers["idempotency-key"] = key
        request = urllib.request.Request(
            f"{self.url}/v1/entries", data=json.dumps(body).encode(), headers=headers
        )

        def send() -> tuple[int, Any]:
            try:
                with _DIRECT.open(request, timeout=10) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        return await asyncio.to_thread(send)

    async def rows(self, account: str) -> int:
        entries = ledger_server.entries
        query = select(func.count()).where(entries.c.account == account)
        async with self.db.transaction(readonly=True) as session:
            return int(await session.scalar(query) or 0)


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    db = Database.temporary(tables=ledger_server.metadata)
    ledger = ledger_server.service(pb2, ledger_keel)(db)
    async with keel.testing.cluster(ledger) as running:
        routes = RouteTable.from_generated(generated())
        targets = {name: running.address(name) for name in running.servers}
        async with serve_asgi(Gateway(routes, targets=targets)) as url:
            yield Edge(url, ledger, db)
    await db.dispose()


async def test_a_repeated_post_returns_the_first_response(edge: Edge) -> None:
    first = await edge.post({"account": "ann", "amount": 3}, key="h-1")
    again = await edge.post({"account": "ann", "amount": 3}, key="h-1")
    assert (
        first
        == again
        == (200, {"id": first[1]["id"], "account": "ann", "amount": "3", "balance": "3"})
    )
    assert await edge.rows("ann") == 1


async def test_a_key_reused_with_another_body_is_refused(edge: Edge) -> None:
    await edge.post({"account": "ben", "amount": 3}, key="h-2")
    status, body = await edge.post({"account": "ben", "amount": 4}, key="h-2")
    assert status == 400
    assert body["code"] == 9  # FAILED_PRECONDITION
    info = next(d for d in body["details"] if d["@type"].endswith("ErrorInfo"))
    assert info["reason"] == "IDEMPOTENCY_KEY_REUSED"
    assert info["metadata"]["key"] == "h-2"
    assert await edge.rows("ben") == 1


async def test_a_post_whose_response_was_lost_is_answered_on_retry(edge: Edge) -> None:
    body = {"account": "cat", "amount": 2, "loseResponse": True}
    status, entry = await edge.post(body, key="h-3")
    assert status == 200  # the gateway's own retry carried the caller's key ...
    assert edge.ledger.arrivals == 2
    assert await edge.post(body, key="h-3") == (200, entry)  # ... and so does the caller's
    assert await edge.rows("cat") == 1


async def test_concurrent_duplicate_posts_have_one_effect(edge: Edge) -> None:
    edge.ledger.gate = asyncio.Event()
    body = {"account": "dee", "amount": 1}
    first = asyncio.create_task(edge.post(body, key="h-4"))
    await asyncio.wait_for(edge.ledger.inside.wait(), 10)
    edge.ledger.arrived.clear()
    second = asyncio.create_task(edge.post(body, key="h-4"))
    await asyncio.wait_for(edge.ledger.arrived.wait(), 10)
    edge.ledger.gate.set()
    replies = await asyncio.gather(first, second)
    assert replies[0] == replies[1]
    assert replies[0][0] == 200
    assert await edge.rows("dee") == 1


async def test_posts_without_a_key_each_have_their_effect(edge: Edge) -> None:
    await edge.post({"account": "eve", "amount": 1})
    await edge.post({"account": "eve", "amount": 1})
    assert await edge.rows("eve") == 2
