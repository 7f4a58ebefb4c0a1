"""The catalog domain's errors as gRPC errors (keel.errors with ErrorInfo in domain
`catalog.acme` and the fields they concern), for the service's handlers.

    with refusals([line.product_id for line in request.lines]):
        await catalog.reserve(...)

Raised inside a keyed call's block (keel.idempotency.call), a final one (NOT_FOUND,
INVALID_ARGUMENT, FAILED_PRECONDITION) is stored with the key: a repeat gets the same refusal.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import keel

from catalog.domain import (
    ArchivedError,
    ConflictError,
    CurrencyError,
    LimitError,
    NotFoundError,
    OutOfStockError,
    ReleasedError,
)

DOMAIN = "catalog.acme"


Where = Sequence[str] | str
"""Where a request names its products: the product ids of its lines (a reservation's), or the
one field naming its one product ("product_id", "product.product_id")."""


def _fields(product_ids: Sequence[str], where: Where) -> list[str]:
    """The request fields naming these products: `lines[i].product_id`, or the one field."""
    if isinstance(where, str):
        return [where]
    return [f"lines[{i}].product_id" for i, p in enumerate(where) if p in product_ids]


def refusal(error: Exception, where: Where = "product_id") -> keel.errors.KeelError | None:
    """`error` as a gRPC error naming the request's fields it concerns, or None if it is not
    one of the domain's."""
    match error:
        case NotFoundError():
            return keel.errors.NotFound(
                f"product {error.args[0]} does not exist",
                field_violations=dict.fromkeys(_fields([error.args[0]], where), "no such product"),
                reason="PRODUCT_NOT_FOUND",
                domain=DOMAIN,
            )
        case ArchivedError():
            return keel.errors.FailedPrecondition(
                f"product {', '.join(error.product_ids)} is archived (off sale)",
                field_violations=dict.fromkeys(
                    _fields(error.product_ids, where), "the product is archived"
                ),
                reason="PRODUCT_ARCHIVED",
                domain=DOMAIN,
                metadata={"product_ids": ",".join(error.product_ids)},
            )
        case CurrencyError():
            return _currency(error, where)
        case LimitError():
            fields = [f"lines[{i}].quantity" for i in error.lines] or ["quantity"]
            return keel.errors.InvalidArgument(
                f"at most {error.limit} units at once",
                field_violations=dict.fromkeys(fields, f"at most {error.limit}"),
            )
        case OutOfStockError():
            return keel.errors.FailedPrecondition(
                "not enough stock",
                field_violations={
                    f"lines[{i}].quantity": f"{asked} asked, {available} in stock"
                    for i, product_id in enumerate(() if isinstance(where, str) else where)
                    if product_id in error.shortages
                    for asked, available in [error.shortages[product_id]]
                },
                reason="OUT_OF_STOCK",
                domain=DOMAIN,
            )
        case ReleasedError():
            return keel.errors.FailedPrecondition(
                f"order {error.args[0]}'s stock was released: it reserves nothing more",
                reason="ORDER_RELEASED",
                domain=DOMAIN,
            )
        case ConflictError():
            return keel.errors.Aborted("a concurrent call changed the same data: try again")
    return None


def _currency(error: CurrencyError, where: Where) -> keel.errors.KeelError:
    if not error.product_ids:  # a price given in another currency
        return keel.errors.InvalidArgument(
            f"the shop sells in {error.currency}",
            field_violations={"product.currency": f"must be {error.currency} (or unset)"},
        )
    return keel.errors.FailedPrecondition(
        f"product {', '.join(error.product_ids)} is not priced in {error.currency}, "
        "the shop's currency",
        field_violations=dict.fromkeys(
            _fields(error.product_ids, where), f"not priced in {error.currency}"
        ),
        reason="CURRENCY_MISMATCH",
        domain=DOMAIN,
    )


@contextmanager
def refusals(where: Where = "product_id") -> Iterator[None]:
    """Raise the domain's errors within the block as gRPC errors (see `refusal`)."""
    try:
        yield
    except Exception as error:
        translated = refusal(error, where)
        if translated is None:
            raise
        raise translated from None
