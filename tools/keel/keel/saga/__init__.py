"""Sagas: a few steps across services, each undone by a compensation if a later one fails.

    async def transfer(run: keel.saga.Run[dict[str, Any]]) -> None:
        await run.step("debit", debit, compensate=refund)
        await run.step("credit", credit)

    transfers = keel.saga.Saga("transfer", transfer, db)
    state = await transfers.start({"from": "a", "to": "b", "amount": 5})
    state = await transfers.start(data, background=True)   # for a call: goes on without it
    keel.serve([...], background=[keel.saga.Recovery(transfers)])   # finishes the others
    await keel.saga.recent(db, statuses=["FAILED"])     # an operator's listing
    await keel.saga.reopen(db, saga_id)                 # a FAILED saga driven again

The state lives in the service's own database (`keel.saga.tables.add_to(metadata)` for its
migrations) and is recorded after every step; every action and compensation gets an
idempotency key derived from the saga's id and the step's name. See docs/sagas.md.
"""

from __future__ import annotations

from keel.saga import tables
from keel.saga.lease import LeaseLostError
from keel.saga.operate import NotResumableError, Summary, recent, reopen
from keel.saga.recovery import Recovery
from keel.saga.run import (
    TRANSIENT_CODES,
    Run,
    SagaError,
    Step,
    StepOrderError,
    StepRefusedError,
)
from keel.saga.saga import Saga, show
from keel.saga.store import (
    COMPENSATED,
    COMPENSATING,
    COMPLETED,
    DONE,
    FAILED,
    FORWARD,
    REFUSED,
    RUNNING,
    STARTED,
    UNDONE,
    SagaState,
    StepState,
)

__all__ = [
    "COMPENSATED",
    "COMPENSATING",
    "COMPLETED",
    "DONE",
    "FAILED",
    "FORWARD",
    "REFUSED",
    "RUNNING",
    "STARTED",
    "TRANSIENT_CODES",
    "UNDONE",
    "LeaseLostError",
    "NotResumableError",
    "Recovery",
    "Run",
    "Saga",
    "SagaError",
    "SagaState",
    "Step",
    "StepOrderError",
    "StepRefusedError",
    "StepState",
    "Summary",
    "recent",
    "reopen",
    "show",
    "tables",
]
