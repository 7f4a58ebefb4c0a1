"""Payments' rules on the in-memory store (no gRPC, no database): what each change starts
from and leads to, by payment and by order, and what the settings decline."""

from __future__ import annotations

import asyncio

import pytest
from payments.domain import (
    BadStateError,
    CapturedError,
    NetworkUnavailableError,
    NotCapturedError,
    NotFoundError,
    Payments,
    State,
)
from payments.memory import InMemoryStore
from payments.settings import PaymentsSettings


@pytest.fixture
def payments() -> Payments:
    return Payments(InMemoryStore(), PaymentsSettings())


async def test_void_releases_an_authorization_and_refund_gives_a_capture_back(
    payments: Payments,
) -> None:
    held = await payments.authorize("o_1", 1000, "EUR", "tok_visa")
    with pytest.raises(NotCapturedError):  # nothing taken: it is voided
        await payments.refund(held.payment_id)
    voided = await payments.void(held.payment_id)
    assert voided.state == State.VOIDED
    assert await payments.void(held.payment_id) == voided
    with pytest.raises(BadStateError):
        await payments.capture(held.payment_id)

    taken = await payments.capture(
        (await payments.authorize("o_2", 500, "EUR", "tok_x")).payment_id
    )
    with pytest.raises(CapturedError) as caught:
        await payments.void(taken.payment_id)
    assert caught.value.payment == taken
    refunded = await payments.refund(taken.payment_id)
    assert (refunded.state, refunded.amount_cents) == (State.REFUNDED, 500)
    assert await payments.refund(taken.payment_id) == refunded
    assert await payments.void(taken.payment_id) == refunded  # holds nothing: unchanged
    assert (await payments.get(taken.payment_id)).state == State.REFUNDED


async def test_by_order(payments: Payments) -> None:
    held = await payments.authorize("o_a", 1000, "EUR", "tok_visa")
    assert (await payments.void_order("o_a")).payment_id == held.payment_id
    declined = await payments.authorize("o_d", 1000, "EUR", "tok_decline")
    assert await payments.void_order("o_d") == declined  # nothing held: stays DECLINED
    with pytest.raises(NotFoundError):
        await payments.refund_order("o_none")
    blocked = await payments.void_order("o_late")  # no payment yet: a VOIDED one of 0
    assert (blocked.state, blocked.amount_cents) == (State.VOIDED, 0)
    assert await payments.authorize("o_late", 1000, "EUR", "tok_visa") == blocked


async def test_one_payment_per_order_under_concurrent_authorizations(payments: Payments) -> None:
    made = await asyncio.gather(
        *(payments.authorize("o_same", 1000, "EUR", "tok_visa") for _ in range(8))
    )
    assert len({p.payment_id for p in made}) == 1


async def test_settings_decide_what_is_declined() -> None:
    settings = PaymentsSettings(
        currencies=frozenset({"EUR"}), max_amount_cents=5000, decline_prefix="tok_no"
    )
    payments = Payments(InMemoryStore(), settings)
    reasons = [
        (await payments.authorize(order, amount, currency, token)).decline_reason
        for order, amount, currency, token in (
            ("o_1", 5000, "EUR", "tok_visa"),
            ("o_2", 5001, "EUR", "tok_visa"),
            ("o_3", 100, "USD", "tok_visa"),
            ("o_4", 100, "EUR", "tok_no_funds"),
            ("o_5", 100, "EUR", "tok_decline"),  # not this network's prefix
        )
    ]
    assert reasons == [
        "",
        "amount over the limit of 5000 cents",
        "currency USD not accepted",
        "card declined",
        "",
    ]
    with pytest.raises(NetworkUnavailableError):
        await payments.authorize("o_6", 100, "EUR", "tok_unavailable_now")


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENTS_CURRENCIES", "eur, chf")
    monkeypatch.setenv("PAYMENTS_MAX_AMOUNT_CENTS", "250")
    settings = PaymentsSettings()
    assert (settings.currencies, settings.max_amount_cents) == (frozenset({"EUR", "CHF"}), 250)
    monkeypatch.setenv("PAYMENTS_CURRENCIES", "euro")
    with pytest.raises(ValueError, match="three-letter"):
        PaymentsSettings()
