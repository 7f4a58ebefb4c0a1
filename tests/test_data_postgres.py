"""keel.testing.postgres: a real PostgreSQL, as an unprivileged user, a database per test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from keel.data import Database
from keel.testing.plugin import postgres_missing
from keel.testing.postgres import INSTALL, PostgresMissingError, PostgresServer, find_binaries
from sqlalchemy import text


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
