"""Payments' rules on its SQL store, on SQLite and on PostgreSQL: one payment per order, kept
across restarts and concurrent calls; capture, refund and void move it once (the rules
themselves: test_payments_domain)."""

from __future__ import annotations

import asyncio

import pytest
from keel.data import Database
from payments.domain import (
    BadStateError,
    CapturedError,
    NotCapturedError,
    NotFoundError,
    Payments,
    State,
)
from payments.store import SqlStore


@pytest.fixture
def store(keel_database: Database) -> SqlStore:
    """Payments' store on its migrated database (SQLite, then PostgreSQL)."""
    return SqlStore(keel_database)


async def test_one_payment_per_order_kept_across_a_restart(keel_database: Database) -> None:
    payments = Payments(SqlStore(keel_database))
    first = await payments.authorize("o_01A", 1000, "EUR", "tok_visa")
    other = await payments.authorize("o_01B", 500, "EUR", "tok_decline")
    assert first.payment_id.startswith("pay_")
    assert first.payment_id < other.payment_id  # made first, sorts first
    assert (first.state, other.state) == (State.AUTHORIZED, State.DECLINED)
    await keel_database.dispose()
    reopened = Database(keel_database.url)  # a new process: the same data, nothing in memory
    try:
        restarted = Payments(SqlStore(reopened))
        again = await restarted.authorize("o_01A", 9999, "USD", "tok_visa")
        assert again == first  # the order's payment, not a new one
        fresh = await restarted.authorize("o_01C", 1000, "EUR", "tok_visa")
        assert fresh.payment_id not in {first.payment_id, other.payment_id}
        assert await restarted.get(first.payment_id) == first
    finally:
        await reopened.dispose()


async def test_concurrent_authorizations_of_one_order_make_one_payment(store: SqlStore) -> None:
    payments = Payments(store)
    made = await asyncio.gather(
        *(payments.authorize("o_same", 1000, "EUR", "tok_visa") for _ in range(8))
    )
    assert len({p.payment_id for p in made}) == 1


async def test_capture_refund_and_void_move_the_payment_once(store: SqlStore) -> None:
    payments = Payments(store)
    authorized = await payments.authorize("o_1", 1000, "EUR", "tok_visa")
    captured = await payments.capture(authorized.payment_id)
    assert captured.state == State.CAPTURED
    assert await payments.capture(authorized.payment_id) == captured  # idempotent
    with pytest.raises(CapturedError):  # a captured payment is refunded, not voided
        await payments.void(authorized.payment_id)
    refunded = await payments.refund_order("o_1")
    assert (await payments.get(authorized.payment_id)).state == State.REFUNDED == refunded.state
    assert await payments.refund(authorized.payment_id) == refunded  # idempotent
    with pytest.raises(BadStateError):
        await payments.capture(authorized.payment_id)
    voided = await payments.void_order("o_2")  # before its authorization: a VOIDED one of 0
    late = await payments.authorize("o_2", 1000, "EUR", "tok_visa")
    assert late == voided
    with pytest.raises(NotCapturedError):
        await payments.refund(voided.payment_id)
    with pytest.raises(NotFoundError):
        await payments.void("pay_missing")
