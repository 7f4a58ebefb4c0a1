"""The catalog domain's errors as gRPC errors (keel.errors with ErrorInfo in domain
`catalog.acme` and the fields they concern), for the service's handlers.

    with refusals(lines=request.lines):
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


def _where(product_ids: Sequence[str], lines: Sequence[str] | str, field: str) -> list[str]:
    """The request fields naming these products: `lines[i].<field>`, or the one field."""
    if isinstance(lines, str):
        return [lines]
    return [f"lines[{i}].{field}" for i, p in enumerate(lines) if p in product_ids]


def refusal(
    error: Exception, lines: Sequence[str] | str = "product_id"
) -> keel.errors.KeelError | None:
    """`error` as a gRPC error, or None if it is not one of the domain's. `lines`: the product
    ids of a reservation's lines, or the request's field naming its one product."""
    match error:
        case NotFoundError():
            return keel.errors.NotFound(
                f"product {error.args[0]} does not exist",
                field_violations=dict.fromkeys(
                    _where([error.args[0]], lines, "product_id"), "no such product"
                ),
                reason="PRODUCT_NOT_FOUND",
                domain=DOMAIN,
            )
        case ArchivedError():
            return keel.errors.FailedPrecondition(
                f"product {', '.join(error.product_ids)} is archived (off sale)",
                field_violations=dict.fromkeys(
                    _where(error.product_ids, lines, "product_id"), "the product is archived"
                ),
                reason="PRODUCT_ARCHIVED",
                domain=DOMAIN,
                metadata={"product_ids": ",".join(error.product_ids)},
            )
        case CurrencyError():
            return _currency(error, lines)
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
                    for i, product_id in enumerate(() if isinstance(lines, str) else lines)
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


def _currency(error: CurrencyError, lines: Sequence[str] | str) -> keel.errors.KeelError:
    if not error.product_ids:  # a price given in another currency
        return keel.errors.InvalidArgument(
            f"the shop sells in {error.currency}",
            field_violations={"product.currency": f"must be {error.currency} (or unset)"},
        )
    return keel.errors.FailedPrecondition(
        f"product {', '.join(error.product_ids)} is not priced in {error.currency}, "
        "the shop's currency",
        field_violations=dict.fromkeys(
            _where(error.product_ids, lines, "product_id"), f"not priced in {error.currency}"
        ),
        reason="CURRENCY_MISMATCH",
        domain=DOMAIN,
    )


@contextmanager
def refusals(lines: Sequence[str] | str = "product_id") -> Iterator[None]:
    """Raise the domain's errors within the block as gRPC errors (see `refusal`)."""
    try:
        yield
    except Exception as error:
        translated = refusal(error, lines)
        if translated is None:
            raise
        raise translated from None
