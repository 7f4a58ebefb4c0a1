"""The saga tables, for a service's own metadata and migrations.

    from keel.saga import tables
    tables.add_to(Base.metadata)  # keel_saga and keel_saga_step join the service's tables

`keel_saga` holds one row per saga (its name, input, status, error and lease, and the status a
FAILED one stopped in); `keel_saga_step` one row per step reached, in order, with its status,
the action's recorded result and how often an operator's resume called it again.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

SAGA = "keel_saga"
STEP = "keel_saga_step"


def add_to(metadata: MetaData) -> tuple[Table, Table]:
    """Define keel_saga and keel_saga_step on `metadata` (once) and return them."""
    if SAGA in metadata.tables:
        return metadata.tables[SAGA], metadata.tables[STEP]
    saga = Table(
        SAGA,
        metadata,
        Column("id", String(128), primary_key=True),
        Column("name", String(255), nullable=False, comment="the saga definition's name"),
        Column("status", String(16), nullable=False, comment="RUNNING ... COMPLETED"),
        Column("data", JSON, nullable=False, comment="the saga's input (JSON)"),
        Column("error", Text, nullable=False, default="", comment="why it compensates"),
        Column("lease_until", DateTime(timezone=True), nullable=True, comment="held until"),
        Column(
            "stopped_from",
            String(16),
            nullable=True,
            comment="a FAILED saga's status when it stopped (what a resume returns it to)",
        ),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Index("ix_keel_saga_status", "status"),
    )
    step = Table(
        STEP,
        metadata,
        Column("saga_id", String(128), ForeignKey(f"{SAGA}.id"), primary_key=True),
        Column("position", Integer, primary_key=True, comment="0 for the first step"),
        Column("name", String(255), nullable=False),
        Column("status", String(16), nullable=False, comment="STARTED ... COMPENSATED"),
        Column("result", JSON, nullable=True, comment="the action's result (JSON)"),
        Column("error", Text, nullable=False, default=""),
        Column(
            "retried",
            Integer,
            nullable=False,
            default=0,
            server_default="0",
            comment="resumes that called it again after a refusal (in its key)",
        ),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    return saga, step


metadata = MetaData()
"""A metadata of only these two tables (tests, or a service without tables of its own)."""
saga, step = add_to(metadata)
