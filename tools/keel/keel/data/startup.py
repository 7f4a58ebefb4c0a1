"""`keel.data.prepare`: a service's database at start-up, migrated when KEEL_MIGRATE=true.

Alembic is imported only when there is something to migrate, so a service that starts
without KEEL_MIGRATE does not pay for it.
"""

from __future__ import annotations

import asyncio
import sys

from keel.data.database import Database
from keel.data.service import ServiceFolder
from keel.runtime import config as settings


def prepare(name: str, db: Database | None = None) -> Database:
    """At start-up, before `keel.serve`: the database of service `name` (its folder under
    services/ and its package: `catalog`), or `db`, with its pending migrations applied when
    KEEL_MIGRATE=true (`keel dev` sets it). A bad setting or a failed migration exits with
    status 2 and one line on stderr."""
    try:
        db = db or Database.for_service(name)
        if not settings.current().migrate:
            return db
        from keel.data import migrations  # noqa: PLC0415 (Alembic: only to migrate)

        service = ServiceFolder.of_package(name)

        async def migrate(db: Database) -> str | None:
            try:
                return await migrations.upgrade(db, service)
            finally:
                await db.dispose()  # no connection outlives this loop or reaches a fork

        current = asyncio.run(migrate(db))
    except settings.ConfigError as error:
        print(f"keel: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as error:
        from keel.data import migrations  # noqa: PLC0415

        if not isinstance(error, migrations.PROBLEMS):
            raise
        print(
            f"keel: {name}: cannot migrate its database: {migrations.one_line(error)}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    print(f"keel: {name}: database at revision {current}", file=sys.stderr)
    return db
