"""A real PostgreSQL for tests: Debian's `postgresql` package, started in a temporary folder.

    with PostgresServer.start() as server:           # initdb + postgres on a free port
        url = await server.create_database("t1")     # postgresql+asyncpg://...:PORT/t1

The server runs as `nobody` when the tests run as root (PostgreSQL refuses root), with
fsync off (a test database need not survive a power cut), and is stopped and removed
afterwards. `find_binaries()` finds `initdb` and `postgres` on PATH or in
/usr/lib/postgresql/<version>/bin. The pytest fixtures are in keel.testing.plugin.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

INSTALL = "apt-get install -y postgresql"
"""What installs the PostgreSQL these tests start (Debian and Ubuntu)."""

START_TIMEOUT = 60.0
_READY = "database system is ready to accept connections"


class PostgresMissingError(RuntimeError):
    """PostgreSQL is not installed here."""


def find_binaries(debian: Path = Path("/usr/lib/postgresql")) -> Path:
    """The folder with `initdb` and `postgres`: PATH first, then Debian's newest version
    (under `debian`); PostgresMissingError, naming the install command, without either."""
    found = shutil.which("initdb")
    if found and (Path(found).parent / "postgres").exists():
        return Path(found).parent
    versions = sorted(
        debian.glob("*/bin/initdb"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)],
    )
    if versions:
        return versions[-1].parent
    raise PostgresMissingError(f"PostgreSQL is not installed: {INSTALL}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_owner(command: list[str]) -> list[str]:
    """`command` as `nobody` when we are root (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return command
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *command]


@dataclass
class PostgresServer:
    """A running PostgreSQL: superuser `postgres`, no password, on 127.0.0.1:`port`."""

    folder: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """The URL of the `postgres` database (asyncpg)."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        """The URL of database `name` on this server (asyncpg)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    async def create_database(self, name: str) -> str:
        """Create an empty database `name`; its URL."""
        from sqlalchemy import text  # noqa: PLC0415 (only PostgreSQL tests need it)
        from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database name {name!r}: lower-case letters, digits, _")
        engine = create_async_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            await engine.dispose()
        return self.database_url(name)

    @classmethod
    @contextmanager
    def start(cls, binaries: Path | None = None) -> Iterator[PostgresServer]:
        """initdb a temporary folder, start postgres on a free port, wait until it accepts
        connections; stop it and remove the folder afterwards."""
        binaries = binaries or find_binaries()
        folder = Path(tempfile.mkdtemp(prefix="keel-postgres-"))
        try:
            if os.geteuid() == 0:
                shutil.chown(folder, "nobody", "nogroup")
            _run(
                _as_owner(
                    [
                        str(binaries / "initdb"),
                        "--pgdata",
                        str(folder / "data"),
                        "--username",
                        "postgres",
                        "--auth",
                        "trust",
                        "--encoding",
                        "UTF8",
                        "--no-sync",
                    ]
                ),
                folder,
            )
            server = _postgres(cls, binaries, folder)
            try:
                yield server
            finally:
                server.process.send_signal(signal.SIGINT)  # fast shutdown
                try:
                    server.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _run(command: list[str], folder: Path) -> None:
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {done.stderr.strip() or done.stdout.strip()}")


def _postgres(cls: type[PostgresServer], binaries: Path, folder: Path) -> PostgresServer:
    """Start postgres (a new port if the chosen one was taken meanwhile) and wait for it."""
    for _ in range(5):
        port = _free_port()
        log = folder / f"postgres-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                _as_owner(
                    [
                        str(binaries / "postgres"),
                        "-D",
                        str(folder / "data"),
                        "-p",
                        str(port),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        f"unix_socket_directories={folder}",
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "max_connections=200",
                    ]
                ),
                cwd=folder,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while process.poll() is None and _READY not in log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-2000:]}")
            time.sleep(0.02)  # polling the log for its "ready" line, not waiting a fixed time
        if process.poll() is None:
            return cls(folder, port, process)
        if "could not bind" not in log.read_text(errors="replace"):
            raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-2000:]}")
    raise RuntimeError("PostgreSQL found no free port")
