"""What an order is, and what can go wrong with it: values free of gRPC and of storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class State(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    SHIPPED = "SHIPPED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


FINAL = {State.SHIPPED, State.CANCELLED, State.REJECTED}


@dataclass(frozen=True)
class Line:
    product_id: str
    quantity: int


@dataclass(frozen=True)
class Payment:
    """The order's payment as payments last reported it (state: AUTHORIZED, CAPTURED,
    VOIDED or DECLINED)."""

    payment_id: str
    state: str
    amount_cents: int = 0
    currency: str = ""
    decline_reason: str = ""
    updated: datetime | None = None


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    lines: tuple[Line, ...]
    state: State = State.PENDING
    total_cents: int = 0
    currency: str = ""
    payment: Payment | None = None
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    version: int = 1
    """Counts the order's changes: a watcher yields the order when it grows."""
    reason: str = ""
    """Why it was REJECTED (the first failure that turned its placing back) or CANCELLED."""


class NotFoundError(Exception):
    """No order with that id (for that customer)."""


class ShippedError(Exception):
    """The order has shipped: it can no longer be cancelled."""


class NotConfirmedError(Exception):
    """Only a CONFIRMED order ships."""

    def __init__(self, order: Order) -> None:
        super().__init__(f"order {order.order_id} is {order.state}, not confirmed")
        self.order = order


class CapturedError(Exception):
    """The order's payment was captured: it cannot be voided, only refunded."""


class InvalidOrderError(Exception):
    """The order breaks a limit of the shop (orders.settings): nothing was done. `field`: the
    request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ConflictError(Exception):
    """A concurrent change got there first; nothing was changed: try again."""


class DependencyError(Exception):
    """A call to another service failed. `uncertain`: it may have taken effect (its deadline
    passed). `cause` is the port's own error, for the caller to translate."""

    def __init__(self, peer: str, cause: Exception, *, uncertain: bool = False) -> None:
        super().__init__(f"{peer}: {cause}")
        self.peer = peer
        self.cause = cause
        self.uncertain = uncertain


def payment_json(payment: Payment) -> dict[str, Any]:
    """The payment's fields as JSON (a saga step's recorded result; the order row adds when
    it was last updated)."""
    return {
        "payment_id": payment.payment_id,
        "state": payment.state,
        "amount_cents": payment.amount_cents,
        "currency": payment.currency,
        "decline_reason": payment.decline_reason,
    }
