"""`keel db`: every service's models agree with its migrations (on SQLite and PostgreSQL),
a model change without a migration fails `keel db check`, errors are one line."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tomllib
from pathlib import Path

import pytest
from keel.testing.postgres import PostgresServer

from tests.conftest import BIN, REPO

SERVICES = sorted(
    p.parent.name
    for p in (REPO / "services").glob("*/pyproject.toml")
    if "models" in tomllib.loads(p.read_text()).get("tool", {}).get("keel", {})
)


def keel_db(*args: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`keel db ...` in its own process, with `env` as its only KEEL_ settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    return subprocess.run(
        [str(BIN / "keel"), "db", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize("service", SERVICES)
async def test_every_services_models_agree_with_its_migrations(
    service: str, dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = {"KEEL_STATE_DIR": str(tmp_path)}
    if dialect == "postgresql":
        server: PostgresServer = request.getfixturevalue("keel_postgres")
        env = {"KEEL_DATABASE_URL": await server.create_database(f"check_{service}")}
    upgraded = keel_db("upgrade", service, env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    checked = keel_db("check", service, env=env)
    assert checked.returncode == 0, checked.stderr  # else: keel db revision NAME -m '...'
    assert "agree" in checked.stdout
    down = keel_db("downgrade", service, "base", env=env)
    assert down.returncode == 0, down.stderr
    assert "at base" in down.stdout


def test_there_are_services_with_databases() -> None:
    assert "catalog" in SERVICES


def test_a_model_change_without_a_migration_fails_the_check(tmp_path: Path) -> None:
    services = tmp_path / "services"
    shutil.copytree(
        REPO / "services" / "catalog",
        services / "catalog",
        ignore=shutil.ignore_patterns("__pycache__", "tests"),
    )
    tables = services / "catalog" / "src" / "catalog" / "tables.py"
    source = tables.read_text()
    stock = "    stock: Mapped[int] = mapped_column(Integer)\n"
    assert stock in source
    tables.write_text(
        source.replace(stock, stock + "    weight_grams: Mapped[int] = mapped_column(Integer)\n")
    )
    env = {"KEEL_STATE_DIR": str(tmp_path / "state")}
    where = ("--services", str(services))
    assert keel_db("upgrade", "catalog", *where, env=env).returncode == 0
    checked = keel_db("check", "catalog", *where, env=env)
    assert checked.returncode == 1
    line = _one_line(checked)
    assert "disagree" in line
    assert "add_column products.weight_grams" in line

    folder = services / "catalog" / "migrations" / "versions"
    before = len(list(folder.glob("*.py")))
    written = keel_db("revision", "catalog", *where, "-m", "product weight", env=env)
    assert written.returncode == 0, written.stderr
    versions = sorted(folder.glob("*.py"))
    assert len(versions) == before + 1
    migration = next(v for v in versions if "product_weight" in v.name)
    assert "weight_grams" in migration.read_text()
    linted = subprocess.run(
        [str(BIN / "ruff"), "check", "--config", str(REPO / "pyproject.toml"), str(migration)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert linted.returncode == 0, linted.stdout  # written formatted and lint-clean
    assert keel_db("upgrade", "catalog", *where, env=env).returncode == 0
    assert keel_db("check", "catalog", *where, env=env).returncode == 0


def test_errors_are_one_line(tmp_path: Path) -> None:
    env = {"KEEL_STATE_DIR": str(tmp_path)}
    unknown = keel_db("upgrade", "nope", env=env)
    assert unknown.returncode == 1
    assert "no service 'nope' under services (found: " in _one_line(unknown)
    elsewhere = keel_db("upgrade", "catalog", env=env, cwd=tmp_path)  # not the repository's root
    assert elsewhere.returncode == 1
    assert "(found: none: run it from the repository's root)" in _one_line(elsewhere)
    revision = keel_db("upgrade", "catalog", "f00d", env=env)
    assert revision.returncode == 1
    assert "f00d" in _one_line(revision)
    behind = keel_db("check", "catalog", env=env)  # never upgraded
    assert behind.returncode == 1
    assert "keel db upgrade catalog" in _one_line(behind)
    nowhere = keel_db(
        "upgrade", "catalog", env={"KEEL_DATABASE_URL": "postgresql+asyncpg://x@127.0.0.1:9/x"}
    )
    assert nowhere.returncode == 1
    assert _one_line(nowhere).startswith("keel db upgrade catalog: ")
    bad = keel_db("upgrade", "catalog", env={"KEEL_MIGRATE": "maybe"})
    assert bad.returncode == 2
    assert "KEEL_MIGRATE" in _one_line(bad)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
async def test_replicas_migrating_at_once_all_succeed(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Replicas started together with KEEL_MIGRATE=true: one migrates, the others find it done."""
    env = {"KEEL_STATE_DIR": str(tmp_path)}
    if dialect == "postgresql":
        server: PostgresServer = request.getfixturevalue("keel_postgres")
        env = {"KEEL_DATABASE_URL": await server.create_database("replicas")}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    runs = [
        subprocess.Popen(
            [str(BIN / "keel"), "db", "upgrade", "catalog"],
            cwd=REPO,
            env={**clean, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outcomes = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outcomes
    assert keel_db("check", "catalog", env=env).returncode == 0


def test_sqlite_migrations_keep_rows_that_refer_to_a_rebuilt_table(tmp_path: Path) -> None:
    """A batch migration rebuilds `orders` (copy, drop, rename) on SQLite: the order lines that
    refer to it (ON DELETE CASCADE) survive it, upgrading and downgrading."""
    env = {"KEEL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'orders.sqlite3'}"}
    first = "5f4e1d5e2373"  # orders and lines; the next revision rebuilds orders
    assert keel_db("upgrade", "orders", first, env=env).returncode == 0
    with sqlite3.connect(tmp_path / "orders.sqlite3") as connection:
        connection.execute(
            "INSERT INTO orders (order_id, customer_id, state, total_cents, currency, created,"
            " updated, version) VALUES ('o1', 'c1', 'CONFIRMED', 100, 'EUR', '2026-12-01',"
            " '2026-12-01', 1)"
        )
        connection.execute(
            "INSERT INTO order_lines (order_id, line, product_id, quantity)"
            " VALUES ('o1', 0, 'p_mug', 2)"
        )

    def lines() -> int:
        with sqlite3.connect(tmp_path / "orders.sqlite3") as connection:
            return int(connection.execute("SELECT count(*) FROM order_lines").fetchone()[0])

    for step in (("upgrade", "orders"), ("downgrade", "orders", first)):
        done = keel_db(*step, env=env)
        assert done.returncode == 0, done.stderr
        assert lines() == 1, step


def test_a_sqlite_migration_that_breaks_a_foreign_key_is_refused(tmp_path: Path) -> None:
    """Foreign keys are off while SQLite migrates (above), so they are checked before commit."""
    services = tmp_path / "services"
    shutil.copytree(
        REPO / "services" / "orders",
        services / "orders",
        ignore=shutil.ignore_patterns("__pycache__", "tests"),
    )
    versions = services / "orders" / "migrations" / "versions"
    head = "c7fc79806799"
    (versions / "20261202_0dd0dd0dd0dd_dangling_line.py").write_text(
        '"""a line of an order that is not there"""\n\n'
        "from alembic import op\n\n"
        'revision = "0dd0dd0dd0dd"\n'
        f'down_revision = "{head}"\n'
        "branch_labels = None\n"
        "depends_on = None\n\n\n"
        "def upgrade() -> None:\n"
        '    op.execute("INSERT INTO order_lines (order_id, line, product_id, quantity)'
        " VALUES ('o_missing', 0, 'p_mug', 1)\")\n\n\n"
        "def downgrade() -> None:\n"
        "    pass\n"
    )
    env = {"KEEL_STATE_DIR": str(tmp_path / "state")}
    where = ("--services", str(services))
    assert keel_db("upgrade", "orders", head, *where, env=env).returncode == 0
    refused = keel_db("upgrade", "orders", *where, env=env)
    assert refused.returncode == 1
    line = _one_line(refused)
    assert "foreign key refers to nothing (first: order_lines row 1 -> orders)" in line
    database = next((tmp_path / "state").rglob("*.sqlite3"))
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]
        assert connection.execute("SELECT count(*) FROM order_lines").fetchone() == (0,)
