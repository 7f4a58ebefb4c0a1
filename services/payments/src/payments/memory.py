"""Payments' data in this process's memory: a second payments.domain.Store, for the domain's
unit tests (no database). Transactions take turns (one lock) and work on a copy that replaces
the data when the block ends without an error, so an error leaves nothing half done."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from payments.domain import ConflictError, Payment


class InMemoryTransaction:
    """payments.domain.Transaction on a copy of the store's payments."""

    def __init__(self, payments: dict[str, Payment]) -> None:
        self.payments = payments

    async def get(self, payment_id: str) -> Payment | None:
        return self.payments.get(payment_id)

    async def lock(self, payment_id: str) -> Payment | None:
        return self.payments.get(payment_id)  # transactions take turns: all is locked

    async def of_order(self, order_id: str) -> Payment | None:
        return next((p for p in self.payments.values() if p.order_id == order_id), None)

    async def add(self, payment: Payment) -> None:
        if payment.payment_id in self.payments or await self.of_order(payment.order_id):
            raise ConflictError(f"order {payment.order_id} has a payment")
        self.payments[payment.payment_id] = payment

    async def put(self, payment: Payment) -> None:
        if payment.payment_id not in self.payments:
            raise ConflictError(f"payment {payment.payment_id} no longer exists")
        self.payments[payment.payment_id] = payment


class InMemoryStore:
    """payments.domain.Store in a dict: `payments` (payment id → Payment) as committed."""

    def __init__(self) -> None:
        self.payments: dict[str, Payment] = {}
        self._turn = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[InMemoryTransaction]:
        """One transaction (payments.domain.Store): committed when the block ends."""
        async with self._turn:
            tx = InMemoryTransaction(dict(self.payments))
            yield tx
            if not readonly:
                self.payments = tx.payments
