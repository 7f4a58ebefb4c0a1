"""keel.testing.postgres: a real PostgreSQL, as an unprivileged user, a database per test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from keel.data import Database, postgres
from keel.testing.plugin import postgres_missing
from keel.testing.postgres import INSTALL, PostgresMissingError, PostgresServer, find_binaries
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError


def test_the_server_runs_as_an_unprivileged_user(keel_postgres: PostgresServer) -> None:
    user = subprocess.run(
        ["ps", "-o", "user=", "-p", str(keel_postgres.process.pid)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert user != "root"
    if os.geteuid() == 0:
        assert user == "nobody"


async def test_each_database_is_new_and_empty(keel_postgres: PostgresServer) -> None:
    first = Database(await keel_postgres.create_database("separate_a"))
    second = Database(await keel_postgres.create_database("separate_b"))
    try:
        async with first.transaction() as session:
            await session.execute(text("CREATE TABLE mine (n int)"))
        async with second.transaction() as session:
            tables = await session.scalar(
                text("SELECT count(*) FROM information_schema.tables WHERE table_name = 'mine'")
            )
        assert tables == 0
    finally:
        await first.dispose()
        await second.dispose()


def test_missing_postgresql_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PostgresMissingError) as caught:
        find_binaries(debian=tmp_path / "nothing")
    assert INSTALL in str(caught.value)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y postgresql"):
        postgres_missing(caught.value)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI runs every PostgreSQL test"):
        postgres_missing(caught.value)


async def _terminate_others(db: Database, mine: int) -> None:
    """End every other session of this database on the server (as a restart would)."""
    async with db.transaction() as session:
        await session.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> :mine"
            ),
            {"mine": mine},
        )


@pytest.mark.parametrize("idle", [True, False])
async def test_a_dropped_pooled_connection_is_replaced(
    keel_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch, idle: bool
) -> None:
    """A pooled connection idle for longer than IDLE_PING_SECONDS is pinged before use, so a
    dropped one is replaced unseen; one used a moment ago is not pinged: the transaction that
    finds it dropped fails, and the pool replaces it and the others for the next one."""
    monkeypatch.setattr(postgres, "IDLE_PING_SECONDS", 0.0 if idle else 3600.0)
    db = Database(await keel_postgres.create_database(f"pinged_{int(idle)}"))
    killer = Database(db.url)
    try:
        async with db.transaction() as session:
            pooled = await session.scalar(text("SELECT pg_backend_pid()"))
        async with killer.transaction() as session:
            mine = await session.scalar(text("SELECT pg_backend_pid()"))
        await _terminate_others(killer, mine)
        if not idle:
            with pytest.raises(DBAPIError) as caught:
                async with db.transaction() as session:
                    await session.execute(text("SELECT 1"))
            assert caught.value.connection_invalidated
        async with db.transaction() as session:
            assert await session.scalar(text("SELECT pg_backend_pid()")) != pooled
    finally:
        await db.dispose()
        await killer.dispose()
