"""Keel's data layer: each service's own database, its migrations, ids and page tokens.

    db = keel.data.Database.for_service("catalog")   # KEEL_DATABASE_URL, else a SQLite file
    db = keel.data.prepare("catalog")                 # the same, migrated if KEEL_MIGRATE=true
    async with db.transaction() as session: ...       # an AsyncSession in one transaction

See docs/data.md.
"""

from __future__ import annotations

from keel.data.database import Database, DataError, id_type, state_dir
from keel.data.ids import new_id
from keel.data.migrations import check, downgrade, prepare, revision, run_env, upgrade
from keel.data.pages import PageTokenError, decode_page_token, encode_page_token
from keel.data.service import ServiceFolder

__all__ = [
    "DataError",
    "Database",
    "PageTokenError",
    "ServiceFolder",
    "check",
    "decode_page_token",
    "downgrade",
    "encode_page_token",
    "id_type",
    "new_id",
    "prepare",
    "revision",
    "run_env",
    "state_dir",
    "upgrade",
]
