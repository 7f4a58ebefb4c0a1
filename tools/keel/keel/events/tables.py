"""The outbox and inbox tables, for a service's own metadata and migrations.

    from keel.events import tables
    tables.add_to(Base.metadata)  # keel_outbox and keel_inbox join the service's tables

`keel_outbox` holds events committed with the state change that caused them, until the relay
has them in JetStream; `keel_inbox` holds the id of every event a subscriber handled, so a
redelivery has no second effect.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
)

OUTBOX = "keel_outbox"
INBOX = "keel_inbox"


def add_to(metadata: MetaData) -> tuple[Table, Table]:
    """Define keel_outbox and keel_inbox on `metadata` (once) and return them."""
    if OUTBOX in metadata.tables:
        return metadata.tables[OUTBOX], metadata.tables[INBOX]
    outbox = Table(
        OUTBOX,
        metadata,
        Column("id", String(32), primary_key=True, comment="event id (sortable, unique)"),
        Column("subject", String(255), nullable=False),
        Column("stream", String(64), nullable=False),
        Column("name", String(255), nullable=False, comment="full proto name of the message"),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSON, nullable=False, comment="correlation id, trace context"),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("sent_at", DateTime(timezone=True), nullable=True),
        Index("ix_keel_outbox_sent_at", "sent_at"),
    )
    inbox = Table(
        INBOX,
        metadata,
        Column("consumer", String(255), primary_key=True, comment="durable consumer name"),
        Column("event_id", String(32), primary_key=True),
        Column("subject", String(255), nullable=False),
        Column("handled_at", DateTime(timezone=True), nullable=False),
    )
    return outbox, inbox


metadata = MetaData()
"""A metadata of only these two tables (tests, or a service without tables of its own)."""
outbox, inbox = add_to(metadata)
