"""Payments' rules: a simulated card processor, independent of gRPC and of how the data is
stored (a Store: see payments.store and payments.memory). Authorization is idempotent per order
id; capture, void and refund are idempotent per payment. Voiding takes back an authorization
that was never captured; taking back a captured payment is a refund. Each can name the order
instead of the payment (a saga's compensation that may not know the payment id)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from keel.data import new_id

from payments.settings import PaymentsSettings


class State(StrEnum):
    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    VOIDED = "VOIDED"
    DECLINED = "DECLINED"
    REFUNDED = "REFUNDED"


HOLDS_NOTHING = frozenset({State.VOIDED, State.DECLINED, State.REFUNDED})
"""States in which a payment neither holds nor has taken the customer's money."""


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

    def __init__(self, payment: Payment, change: str = "") -> None:
        what = f": it cannot be {change}" if change else ""
        super().__init__(f"payment {payment.payment_id} is {payment.state}{what}")
        self.payment = payment


class CapturedError(BadStateError):
    """A void of a CAPTURED payment: taking it back is a refund."""

    def __init__(self, payment: Payment) -> None:
        super().__init__(payment, "voided, refund it")


class NotCapturedError(BadStateError):
    """A refund of a payment that was never captured (an AUTHORIZED one is voided)."""

    def __init__(self, payment: Payment) -> None:
        super().__init__(payment, "refunded, it was not captured")


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
    """Authorize, capture, void and refund payments, as `settings` say (currencies accepted,
    the largest amount, the simulated card network's answers)."""

    def __init__(self, store: Store, settings: PaymentsSettings | None = None) -> None:
        self.store = store
        self.settings = settings or PaymentsSettings()

    async def get(self, payment_id: str) -> Payment:
        async with self.store.transaction(readonly=True) as tx:
            payment = await tx.get(payment_id)
        if payment is None:
            raise NotFoundError(payment_id)
        return payment

    def _decline_reason(self, amount_cents: int, currency: str, token: str) -> str:
        """Why the (simulated) card network declines this authorization ("": it does not)."""
        if token.startswith(self.settings.decline_prefix):
            return "card declined"
        if currency not in self.settings.currencies:
            return f"currency {currency} not accepted"
        if amount_cents > self.settings.max_amount_cents:
            return f"amount over the limit of {self.settings.max_amount_cents} cents"
        return ""

    async def authorize(
        self, order_id: str, amount_cents: int, currency: str, token: str
    ) -> Payment:
        """The order's payment: the one it has (whatever this call asks), else a new one,
        AUTHORIZED or DECLINED by the card network."""
        async with self.store.transaction(readonly=True) as tx:
            existing = await tx.of_order(order_id)
        if existing is not None:
            return existing
        if token.startswith(self.settings.unavailable_prefix):
            raise NetworkUnavailableError("the card network is not answering")
        declined = self._decline_reason(amount_cents, currency, token)
        payment = Payment(
            new_id("pay"),
            order_id,
            amount_cents,
            currency,
            State.DECLINED if declined else State.AUTHORIZED,
            declined,
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
        """Take an AUTHORIZED payment (CAPTURED; again: unchanged)."""
        async with self.store.transaction() as tx:
            return await self._move(tx, await tx.lock(payment_id), payment_id, "capture")

    async def void(self, payment_id: str) -> Payment:
        """Release an AUTHORIZED payment (VOIDED); one that holds nothing (VOIDED, DECLINED,
        REFUNDED) stays. CapturedError for a CAPTURED one (it is refunded instead)."""
        async with self.store.transaction() as tx:
            return await self._move(tx, await tx.lock(payment_id), payment_id, "void")

    async def refund(self, payment_id: str) -> Payment:
        """Give a CAPTURED payment back (REFUNDED; again: unchanged). NotCapturedError for one
        that was never captured."""
        async with self.store.transaction() as tx:
            return await self._move(tx, await tx.lock(payment_id), payment_id, "refund")

    async def void_order(self, order_id: str) -> Payment:
        """`void` for the order's payment. An order without one gets a VOIDED payment of 0: an
        authorization for it that arrives later (a late copy) finds it and authorizes nothing."""
        async with self.store.transaction() as tx:
            payment = await tx.of_order(order_id)
            if payment is None:
                payment = Payment(
                    new_id("pay"), order_id, 0, "", State.VOIDED, "voided before authorization"
                )
                await tx.add(payment)
                return payment
            return await self._move(tx, await tx.lock(payment.payment_id), order_id, "void")

    async def refund_order(self, order_id: str) -> Payment:
        """`refund` for the order's payment; NotFoundError when the order has none."""
        async with self.store.transaction() as tx:
            payment = await tx.of_order(order_id)
            if payment is None:
                raise NotFoundError(f"order {order_id}")
            return await self._move(tx, await tx.lock(payment.payment_id), order_id, "refund")

    @staticmethod
    async def _move(tx: Transaction, payment: Payment | None, name: str, change: str) -> Payment:
        """Apply `change` (capture, void, refund) to the locked `payment` within `tx`."""
        if payment is None:
            raise NotFoundError(name)
        to, allowed = _CHANGES[change]
        if payment.state == to or (change == "void" and payment.state in HOLDS_NOTHING):
            return payment
        if payment.state not in allowed:
            if change == "void" and payment.state == State.CAPTURED:
                raise CapturedError(payment)
            if change == "refund":
                raise NotCapturedError(payment)
            raise BadStateError(payment, f"{change}d")
        payment = replace(payment, state=to, updated=datetime.now(UTC))
        await tx.put(payment)
        return payment


_CHANGES = {
    "capture": (State.CAPTURED, {State.AUTHORIZED}),
    "void": (State.VOIDED, {State.AUTHORIZED}),
    "refund": (State.REFUNDED, {State.CAPTURED}),
}
"""Each change: the state it leads to, and the states it starts from."""
