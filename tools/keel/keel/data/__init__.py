"""Keel's data layer: each service's own database, its migrations, ids and page tokens.

    db = keel.data.Database.for_service("catalog")   # KEEL_DATABASE_URL, else a SQLite file
    db = keel.data.prepare("catalog")                 # the same, migrated if KEEL_MIGRATE=true
    async with db.transaction() as session: ...       # an AsyncSession in one transaction

The migration commands (`upgrade`, `downgrade`, `revision`, `check`, `run_env`) load Alembic
on first use. See docs/data.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keel.data.conflicts import Joined, conflicts
from keel.data.database import Database, DataError, id_type, state_dir
from keel.data.ids import new_id
from keel.data.pages import PageTokenError, decode_page_token, encode_page_token
from keel.data.service import ServiceFolder
from keel.data.startup import prepare

if TYPE_CHECKING:
    from keel.data.migrations import check, downgrade, revision, run_env, upgrade

_MIGRATIONS = ("check", "downgrade", "revision", "run_env", "upgrade")

__all__ = [
    "DataError",
    "Database",
    "Joined",
    "PageTokenError",
    "ServiceFolder",
    "check",
    "conflicts",
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


def __getattr__(name: str) -> Any:
    if name not in _MIGRATIONS:
        raise AttributeError(f"module 'keel.data' has no attribute {name!r}")
    value = getattr(importlib.import_module("keel.data.migrations"), name)
    globals()[name] = value
    return value
