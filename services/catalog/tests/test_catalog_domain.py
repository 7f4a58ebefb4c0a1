"""Unit tests of the catalog's rules on the in-memory store: no gRPC, no database."""

from __future__ import annotations

import asyncio

import pytest
from catalog.domain import (
    ArchivedError,
    Catalog,
    CurrencyError,
    LimitError,
    NotFoundError,
    OutOfStockError,
    Policy,
    Product,
    ProductState,
    ReleasedError,
    count_sold,
)
from catalog.memory import InMemoryStore

POLICY = Policy(
    currency="CHF", default_page_size=2, max_page_size=3, max_line_quantity=5, max_restock=50
)


def _catalog(*products: Product) -> Catalog:
    return Catalog(InMemoryStore(products), POLICY)


async def test_a_product_created_through_the_api_can_be_restocked_and_sold() -> None:
    catalog = _catalog()
    made = await catalog.create("Spoon", 250)
    assert (made.currency, made.stock, made.state) == ("CHF", 0, ProductState.ACTIVE)
    with pytest.raises(OutOfStockError):
        await catalog.reserve("o_1", [(made.product_id, 1)])
    restocked = await catalog.restock(made.product_id, 7)
    assert restocked.stock == 7
    assert await catalog.get(made.product_id) == restocked
    reservation = await catalog.reserve("o_1", [(made.product_id, 3)])
    assert (reservation.total_cents, reservation.currency) == (750, "CHF")
    assert (await catalog.get(made.product_id)).stock == 4


async def test_restock_limits_and_missing_products() -> None:
    catalog = _catalog(Product("p_1", "One", 100, "CHF", stock=1))
    for quantity in (0, -1, 51):
        with pytest.raises(LimitError) as caught:
            await catalog.restock("p_1", quantity)
        assert (caught.value.limit, caught.value.lines) == (50, ())
    assert (await catalog.restock("p_1", 50)).stock == 51
    with pytest.raises(NotFoundError):
        await catalog.restock("p_nope", 1)


async def test_archived_products_are_not_sold_listed_or_restocked_but_readable() -> None:
    catalog = _catalog(
        Product("p_1", "One", 100, "CHF", stock=5), Product("p_2", "Two", 200, "CHF", stock=5)
    )
    archived = await catalog.archive("p_1")
    assert archived.state is ProductState.ARCHIVED
    assert await catalog.archive("p_1") == archived  # again: unchanged
    assert (await catalog.get("p_1")).state is ProductState.ARCHIVED
    with pytest.raises(ArchivedError) as caught:
        await catalog.reserve("o_1", [("p_2", 1), ("p_1", 1)])
    assert caught.value.product_ids == ("p_1",)
    assert (await catalog.get("p_2")).stock == 5  # nothing of the order was taken
    with pytest.raises(ArchivedError):
        await catalog.restock("p_1", 1)
    assert [p.product_id for p in (await catalog.page(""))[0]] == ["p_2"]
    shown, _ = await catalog.page("", archived=True)
    assert [p.product_id for p in shown] == ["p_1", "p_2"]
    assert (await catalog.unarchive("p_1")).state is ProductState.ACTIVE
    assert (await catalog.reserve("o_2", [("p_1", 2)])).total_cents == 200


async def test_a_reservation_made_before_archiving_is_still_released() -> None:
    catalog = _catalog(Product("p_1", "One", 100, "CHF", stock=5))
    await catalog.reserve("o_1", [("p_1", 2)])
    await catalog.archive("p_1")
    await catalog.release("o_1")
    assert (await catalog.get("p_1")).stock == 5


async def test_the_shops_currency_prices_products_and_totals() -> None:
    catalog = _catalog(
        Product("p_chf", "Here", 100, "CHF", stock=5), Product("p_eur", "Old", 100, "EUR", stock=5)
    )
    with pytest.raises(CurrencyError) as caught:
        await catalog.create("Euro spoon", 100, "EUR")
    assert (caught.value.currency, caught.value.product_ids) == ("CHF", ())
    with pytest.raises(CurrencyError):
        await catalog.update("p_chf", currency="USD")
    assert (await catalog.update("p_chf", currency="CHF", title="Here too")).title == "Here too"
    # A product stored in another currency (before the shop changed its own) is not sold.
    with pytest.raises(CurrencyError) as caught:
        await catalog.reserve("o_1", [("p_chf", 1), ("p_eur", 1)])
    assert caught.value.product_ids == ("p_eur",)
    assert (await catalog.get("p_chf")).stock == 5


async def test_reservation_lines_are_limited_per_line() -> None:
    catalog = _catalog(Product("p_1", "One", 100, "CHF", stock=50))
    with pytest.raises(LimitError) as caught:
        await catalog.reserve("o_1", [("p_1", 5), ("p_1", 6), ("p_1", 1)])
    assert (caught.value.limit, caught.value.lines) == (5, (1,))
    # Two lines of one product may together exceed the per-line limit.
    assert (await catalog.reserve("o_1", [("p_1", 5), ("p_1", 5)])).total_cents == 1000
    assert (await catalog.get("p_1")).stock == 40


async def test_pages_use_the_policys_default_and_maximum() -> None:
    catalog = _catalog(*(Product(f"p_{i}", f"P{i}", 1, "CHF") for i in range(7)))
    first, last = await catalog.page("")
    assert [p.product_id for p in first] == ["p_0", "p_1"]  # default 2
    big, last = await catalog.page(last or "", 100)
    assert [p.product_id for p in big] == ["p_2", "p_3", "p_4"]  # at most 3
    rest, last = await catalog.page(last or "", 3)
    assert ([p.product_id for p in rest], last) == (["p_5", "p_6"], None)


async def test_release_before_reserve_refuses_the_late_reservation() -> None:
    catalog = _catalog(Product("p_1", "One", 100, "CHF", stock=5))
    await catalog.release("o_late")
    with pytest.raises(ReleasedError):
        await catalog.reserve("o_late", [("p_1", 1)])
    assert (await catalog.get("p_1")).stock == 5


async def test_a_failed_transaction_changes_nothing_and_writers_take_turns() -> None:
    store = InMemoryStore([Product("p_1", "One", 100, "CHF", stock=10)])
    catalog = Catalog(store, POLICY)

    async def fail() -> None:
        async with store.transaction() as tx:
            await tx.add_units_sold("p_1", 3)
            raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        await fail()
    assert (await catalog.get("p_1")).units_sold == 0
    outcomes = await asyncio.gather(
        *(catalog.reserve(f"o_{i}", [("p_1", 1)]) for i in range(14)), return_exceptions=True
    )
    assert sum(isinstance(o, OutOfStockError) for o in outcomes) == 4
    assert (await catalog.get("p_1")).stock == 0


async def test_units_sold_follow_placed_and_cancelled_orders() -> None:
    store = InMemoryStore([Product("p_1", "One", 100, "CHF"), Product("p_2", "Two", 1, "CHF")])
    async with store.transaction() as tx:
        await count_sold(tx, [("p_1", 2), ("p_2", 1), ("p_1", 1)])
    async with store.transaction() as tx:
        await count_sold(tx, [("p_1", 1)], sign=-1)
    catalog = Catalog(store, POLICY)
    assert [(await catalog.get(p)).units_sold for p in ("p_1", "p_2")] == [2, 1]
    listed, _ = await catalog.page("", 3)
    assert [p.units_sold for p in listed] == [2, 1]
