"""Payments' rules: a simulated card processor, independent of gRPC and of how the data is
stored (a Store: see payments.store). Authorization is idempotent per order id; capture, void
and refund are idempotent per payment. Voiding takes back an authorization that was never
captured; taking back a captured payment is a refund. `settle_order` undoes whatever an order's
payment got to, by the order's id (a saga's compensation that may not know the payment)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from keel.data import new_id

DECLINED_TOKEN = "tok_decline"
"""A card token the (simulated) card network declines."""
UNAVAILABLE_TOKEN = "tok_unavailable"
"""A card token for which the (simulated) card network does not answer."""


class State(StrEnum):
    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    VOIDED = "VOIDED"
    DECLINED = "DECLINED"


@dataclass(frozen=True)
class Payment:
    payment_id: str
    order_id: str
    amount_cents: int
    currency: str
    state: State
    decline_reason: str = ""
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))


class NotFoundError(Exception):
    """No payment with that id."""


class BadStateError(Exception):
    """The payment is in a state the change does not start from."""

    def __init__(self, payment: Payment) -> None:
        super().__init__(f"payment {payment.payment_id} is {payment.state}")
        self.payment = payment


class NetworkUnavailableError(Exception):
    """The card network is not answering: nothing was recorded, try again."""


class ConflictError(Exception):
    """A concurrent change got there first; nothing was changed: try again."""


class Transaction(Protocol):
    """Payments' data within one transaction (see Store.transaction)."""

    async def get(self, payment_id: str) -> Payment | None: ...
    async def lock(self, payment_id: str) -> Payment | None:
        """The payment, locked until the transaction ends."""
        ...

    async def of_order(self, order_id: str) -> Payment | None: ...
    async def add(self, payment: Payment) -> None:
        """Store a new payment; ConflictError (at the latest on commit) when the order has one."""
        ...

    async def put(self, payment: Payment) -> None:
        """Store a changed payment (one that exists)."""
        ...


class Store(Protocol):
    """Where payments are kept."""

    def transaction(self, *, readonly: bool = False) -> AbstractAsyncContextManager[Transaction]:
        """One transaction: committed when the block ends, undone when it raises;
        ConflictError when a concurrent transaction made it impossible."""
        ...


class Payments:
    """Authorize, capture and void payments."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, payment_id: str) -> Payment:
        async with self.store.transaction(readonly=True) as tx:
            payment = await tx.get(payment_id)
        if payment is None:
            raise NotFoundError(payment_id)
        return payment

    async def authorize(
        self, order_id: str, amount_cents: int, currency: str, token: str
    ) -> Payment:
        """The order's payment: the one it has (whatever this call asks), else a new one,
        AUTHORIZED or DECLINED by the card network."""
        async with self.store.transaction(readonly=True) as tx:
            existing = await tx.of_order(order_id)
        if existing is not None:
            return existing
        if token == UNAVAILABLE_TOKEN:
            raise NetworkUnavailableError("the card network is not answering")
        declined = token == DECLINED_TOKEN
        payment = Payment(
            new_id("pay"),
            order_id,
            amount_cents,
            currency,
            State.DECLINED if declined else State.AUTHORIZED,
            "card declined" if declined else "",
        )
        try:
            async with self.store.transaction() as tx:
                existing = await tx.of_order(order_id)
                if existing is not None:
                    return existing
                await tx.add(payment)
        except ConflictError:  # a concurrent authorization of the same order won
            async with self.store.transaction(readonly=True) as tx:
                existing = await tx.of_order(order_id)
            if existing is None:
                raise
            return existing
        return payment

    async def capture(self, payment_id: str) -> Payment:
        return await self._move(payment_id, {State.AUTHORIZED}, State.CAPTURED)

    async def void(self, payment_id: str) -> Payment:
        """Take back an authorization that was not captured (VOIDED)."""
        return await self._move(payment_id, {State.AUTHORIZED}, State.VOIDED)

    async def refund(self, payment_id: str) -> Payment:
        """Give a captured payment back (VOIDED: the proto has no REFUNDED state yet)."""
        return await self._move(payment_id, {State.CAPTURED}, State.VOIDED)

    async def void_or_refund(self, payment_id: str) -> Payment:
        """Void an authorized payment or refund a captured one (a declined one stays)."""
        payment = await self.get(payment_id)
        if payment.state == State.CAPTURED:
            return await self.refund(payment_id)
        if payment.state == State.DECLINED:
            return payment
        return await self.void(payment_id)

    async def settle_order(self, order_id: str) -> Payment:
        """Undo the order's payment: void it or refund it, whichever applies (a declined one
        stays). An order without a payment gets a VOIDED one of 0: an authorization for it
        that arrives later (a late copy) finds it and authorizes nothing."""
        async with self.store.transaction() as tx:
            payment = await tx.of_order(order_id)
            if payment is None:
                payment = Payment(
                    new_id("pay"), order_id, 0, "", State.VOIDED, "voided before authorization"
                )
                await tx.add(payment)
                return payment
        return await self.void_or_refund(payment.payment_id)

    async def _move(self, payment_id: str, allowed: set[State], to: State) -> Payment:
        async with self.store.transaction() as tx:
            payment = await tx.lock(payment_id)
            if payment is None:
                raise NotFoundError(payment_id)
            if payment.state == to:
                return payment
            if payment.state not in allowed:
                raise BadStateError(payment)
            payment = replace(payment, state=to, updated=datetime.now(UTC))
            await tx.put(payment)
        return payment
