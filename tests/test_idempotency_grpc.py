"""Idempotency keys over gRPC: the ledger test service (tests/sagas) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import grpc
import keel
import keel.idempotency
import keel.testing
import pytest
from keel.data import Database
from keel.runtime import config
from sqlalchemy import func, select

from tests.sagas import ledger_server
from tests.sagas.support import modules

pb2, ledger_keel = modules()


@dataclasses.dataclass
class Running:
    ledger: Any
    client: Any
    db: Database

    async def rows(self, **where: Any) -> int:
        entries = ledger_server.entries
        query = select(func.count()).select_from(entries)
        for column, value in where.items():
            query = query.where(entries.c[column] == value)
        async with self.db.transaction(readonly=True) as session:
            return int(await session.scalar(query) or 0)


@pytest.fixture
async def running(keel_database_url: str) -> AsyncIterator[Running]:
    db = Database(keel_database_url, tables=ledger_server.metadata)
    ledger = ledger_server.service(pb2, ledger_keel)(db)
    async with keel.testing.cluster(ledger) as cluster:
        yield Running(ledger, cluster.client(ledger_keel.LedgerServiceClient), db)
    await db.dispose()


def keyed(key: str) -> list[tuple[str, str | bytes]]:
    return [(keel.idempotency.METADATA_KEY, key)]


async def test_a_repeat_returns_the_first_response_and_does_nothing(running: Running) -> None:
    request = pb2.ApplyRequest(account="alice", amount=-30)
    first = await running.client.apply(request, metadata=keyed("k-1"))
    again = await running.client.apply(request, metadata=keyed("k-1"))
    assert again == first
    assert first.balance == -30
    assert await running.rows(account="alice") == 1
    other = await running.client.apply(request, metadata=keyed("k-2"))
    assert other.balance == -60


async def test_a_lost_response_is_retried_with_the_same_key(running: Running) -> None:
    entry = await running.client.apply(
        pb2.ApplyRequest(account="bob", amount=5, lose_response=True)
    )
    assert running.ledger.arrivals == 2  # the client's own retry after UNAVAILABLE ...
    assert (entry.account, entry.amount, entry.balance) == ("bob", 5, 5)
    assert await running.rows(account="bob") == 1  # ... had no second effect


async def test_a_method_without_keys_is_not_retried(running: Running) -> None:
    with pytest.raises(keel.errors.Unavailable):
        await running.client.note(pb2.ApplyRequest(account="carol", amount=1, lose_response=True))
    assert running.ledger.arrivals == 1


async def test_a_key_reused_with_another_request_is_refused(running: Running) -> None:
    await running.client.apply(pb2.ApplyRequest(account="dan", amount=1), metadata=keyed("k-3"))
    with pytest.raises(keel.errors.FailedPrecondition) as refused:
        await running.client.apply(pb2.ApplyRequest(account="dan", amount=2), metadata=keyed("k-3"))
    assert refused.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert refused.value.metadata == {"key": "k-3", "method": "ledger.v1.ApplyRequest"}
    assert await running.rows(account="dan") == 1


async def test_concurrent_duplicates_have_one_effect(running: Running) -> None:
    ledger = running.ledger
    ledger.gate = asyncio.Event()
    request = pb2.ApplyRequest(account="erin", amount=7)
    first = asyncio.create_task(running.client.apply(request, metadata=keyed("k-4")))
    await asyncio.wait_for(ledger.inside.wait(), 10)  # the first holds its transaction
    ledger.arrived.clear()
    second = asyncio.create_task(running.client.apply(request, metadata=keyed("k-4")))
    await asyncio.wait_for(ledger.arrived.wait(), 10)  # the duplicate is being handled
    ledger.gate.set()
    replies = await asyncio.gather(first, second)
    assert replies[0] == replies[1]
    assert await running.rows(account="erin") == 1


async def test_a_final_error_is_the_keys_outcome(running: Running) -> None:
    request = pb2.ApplyRequest(account="closed-1", amount=4)
    for _ in range(2):
        with pytest.raises(keel.errors.FailedPrecondition) as refused:
            await running.client.apply(request, metadata=keyed("k-5"))
        assert refused.value.reason == "ACCOUNT_CLOSED"
    table = keel.idempotency.tables.idempotency
    async with running.db.transaction(readonly=True) as session:
        codes = (await session.execute(select(table.c.code).where(table.c.key == "k-5"))).all()
    assert [row.code for row in codes] == [grpc.StatusCode.FAILED_PRECONDITION.value[0]]


async def test_an_expired_key_runs_again_and_is_purged(running: Running) -> None:
    previous = config.current()
    config.set_current(dataclasses.replace(previous, idempotency_ttl=1e-6))
    try:
        request = pb2.ApplyRequest(account="fay", amount=1)
        await running.client.apply(request, metadata=keyed("k-6"))
        await running.client.apply(request, metadata=keyed("k-6"))
        assert await running.rows(account="fay") == 2
        assert await keel.idempotency.purge(running.db) == 1
    finally:
        config.set_current(previous)


async def test_a_malformed_key_is_refused(running: Running) -> None:
    with pytest.raises(keel.errors.InvalidArgument) as refused:
        await running.client.apply(pb2.ApplyRequest(account="gus"), metadata=keyed("x" * 256))
    assert refused.value.reason == "MALFORMED_METADATA"
