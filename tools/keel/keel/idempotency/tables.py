"""The idempotency table, for a service's own metadata and migrations.

    from keel.idempotency import tables
    tables.add_to(Base.metadata)  # keel_idempotency joins the service's tables

`keel_idempotency` holds, per (key, method), a hash of the request and the outcome of the first
call that carried the key: the response's bytes, or the status of a final error.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, LargeBinary, MetaData, String, Table

IDEMPOTENCY = "keel_idempotency"


def add_to(metadata: MetaData) -> Table:
    """Define keel_idempotency on `metadata` (once) and return it."""
    if IDEMPOTENCY in metadata.tables:
        return metadata.tables[IDEMPOTENCY]
    return Table(
        IDEMPOTENCY,
        metadata,
        Column("key", String(255), primary_key=True, comment="the caller's idempotency key"),
        Column("method", String(255), primary_key=True, comment="the rpc the key was used on"),
        Column("request_hash", String(64), nullable=False, comment="sha256 of the request"),
        Column("code", Integer, nullable=False, comment="gRPC status code (0: OK)"),
        Column("outcome", LargeBinary, nullable=False, comment="response, or google.rpc.Status"),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("expires_at", DateTime(timezone=True), nullable=False),
        Index("ix_keel_idempotency_expires_at", "expires_at"),
    )


metadata = MetaData()
"""A metadata of only this table (tests, or a service without tables of its own)."""
idempotency = add_to(metadata)
