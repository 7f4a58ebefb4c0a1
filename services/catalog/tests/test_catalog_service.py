"""Contract tests of the catalog through its generated client and a real server, on its
migrated database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
import grpc.aio
import keel
import pytest
from acme.catalog.v1 import catalog_keel, catalog_pb2
from catalog.service import CatalogService
from catalog.settings import CatalogSettings
from catalog.store import SqlStore, seed
from google.protobuf import field_mask_pb2
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import BadRequest
from keel.data import Database

Client = catalog_keel.CatalogServiceClient
SETTINGS = CatalogSettings(max_restock=100, max_line_quantity=50)


@pytest.fixture
def store(keel_database: Database) -> SqlStore:
    """The catalog's store on its migrated database (SQLite, then PostgreSQL)."""
    return SqlStore(keel_database)


@pytest.fixture
def keel_services(store: SqlStore) -> Sequence[keel.ServiceBase]:
    return [CatalogService(seed(store), SETTINGS)]


@pytest.fixture
def catalog(keel_client: Callable[[type[Any]], Any]) -> Client:
    client: Client = keel_client(Client)
    return client


def _lines(*lines: tuple[str, int]) -> list[catalog_pb2.StockLine]:
    return [catalog_pb2.StockLine(product_id=p, quantity=q) for p, q in lines]


async def test_get_seeded_and_missing_product(catalog: Client) -> None:
    reply = await catalog.get_product(catalog_pb2.GetProductRequest(product_id="p_mug"))
    assert (reply.product.title, reply.product.price_cents, reply.product.stock) == (
        "Mug",
        899,
        200,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await catalog.get_product(catalog_pb2.GetProductRequest(product_id="p_nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_pages_through_everything(catalog: Client) -> None:
    seen, token = [], ""
    while True:
        page = await catalog.list_products(
            catalog_pb2.ListProductsRequest(page_size=2, page_token=token)
        )
        seen += [p.product_id for p in page.products]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["p_kettle", "p_mug", "p_teapot"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await catalog.list_products(catalog_pb2.ListProductsRequest(page_token="abc"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_create_and_update_with_mask(catalog: Client) -> None:
    created = await catalog.create_product(
        catalog_pb2.CreateProductRequest(
            product=catalog_pb2.Product(title="Spoon", price_cents=199, currency="EUR")
        )
    )
    product_id = created.product.product_id
    assert product_id.startswith("p_")
    updated = await catalog.update_product(
        catalog_pb2.UpdateProductRequest(
            product=catalog_pb2.Product(product_id=product_id, title="Teaspoon", price_cents=1),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        )
    )
    assert (updated.product.title, updated.product.price_cents) == ("Teaspoon", 199)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await catalog.update_product(
            catalog_pb2.UpdateProductRequest(
                product=catalog_pb2.Product(product_id=product_id, title="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["stock"]),
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Without a mask every updatable field is set; an unset currency is the shop's, as at
    # creation, so a whole-product update does not need to repeat it.
    whole = await catalog.update_product(
        catalog_pb2.UpdateProductRequest(
            product=catalog_pb2.Product(product_id=product_id, title="Ladle", price_cents=5)
        )
    )
    assert (whole.product.title, whole.product.price_cents) == ("Ladle", 5)
    assert whole.product.currency == "EUR"


async def test_a_retried_create_with_its_key_makes_one_product(catalog: Client) -> None:
    create = catalog_pb2.CreateProductRequest(product=catalog_pb2.Product(title="Fork"))
    key = [("idempotency-key", "new-fork")]
    first = await catalog.create_product(create, metadata=key, timeout=10)
    again = await catalog.create_product(create, metadata=key, timeout=10)  # a retry
    assert again == first
    other = await catalog.create_product(create, timeout=10)  # the client's own fresh key
    assert other.product.product_id != first.product.product_id
    listed = await catalog.list_products(catalog_pb2.ListProductsRequest(page_size=100))
    forks = [p.product_id for p in listed.products if p.title == "Fork"]
    assert sorted(forks) == sorted([first.product.product_id, other.product.product_id])


async def test_create_validates_the_product(catalog: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await catalog.create_product(
            catalog_pb2.CreateProductRequest(
                product=catalog_pb2.Product(title="", price_cents=-1, currency="euro")
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    for problem in ("product.price_cents", "product.currency", "a new product needs a title"):
        assert problem in details
    bad = next(
        BadRequest.FromString(d.value)
        for d in status_pb2.Status.FromString(
            dict(caught.value.trailing_metadata() or ())["grpc-status-details-bin"]
        ).details
        if d.type_url.endswith("/google.rpc.BadRequest")
    )
    named = {v.field: v.description for v in bad.field_violations}
    assert named["product"] == "a new product needs a title"  # every violation names its field
    assert all(named), named


async def test_reserve_is_idempotent_and_release_restores_stock(catalog: Client) -> None:
    request = catalog_pb2.ReserveStockRequest(order_id="o_1", lines=_lines(("p_teapot", 4)))
    first = await catalog.reserve_stock(request, timeout=10)
    again = await catalog.reserve_stock(request, timeout=10)
    assert (first.total_cents, first.currency) == (4 * 3499, "EUR")
    assert again == first
    teapot = catalog_pb2.GetProductRequest(product_id="p_teapot")
    assert (await catalog.get_product(teapot)).product.stock == 6
    await catalog.release_stock(catalog_pb2.ReleaseStockRequest(order_id="o_1"))
    await catalog.release_stock(catalog_pb2.ReleaseStockRequest(order_id="o_1"))
    assert (await catalog.get_product(teapot)).product.stock == 10


async def test_a_reservation_after_the_release_is_refused(catalog: Client) -> None:
    # A compensation's release can overtake the reservation it undoes (a late copy).
    await catalog.release_stock(catalog_pb2.ReleaseStockRequest(order_id="o_late"), timeout=10)
    late = catalog_pb2.ReserveStockRequest(order_id="o_late", lines=_lines(("p_teapot", 1)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await catalog.reserve_stock(late, timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    teapot = catalog_pb2.GetProductRequest(product_id="p_teapot")
    assert (await catalog.get_product(teapot)).product.stock == 10


async def test_out_of_stock_names_the_line(catalog: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await catalog.reserve_stock(
            catalog_pb2.ReserveStockRequest(
                order_id="o_2", lines=_lines(("p_mug", 1), ("p_teapot", 11))
            )
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "lines[1].quantity" not in (caught.value.details() or "")  # details ride in the trailer
    mug = await catalog.get_product(catalog_pb2.GetProductRequest(product_id="p_mug"))
    assert mug.product.stock == 200  # nothing was taken


async def test_keyed_reserve_and_release_take_effect_once(catalog: Client) -> None:
    key = [("idempotency-key", "saga-7/reserve")]
    request = catalog_pb2.ReserveStockRequest(order_id="o_7", lines=_lines(("p_teapot", 3)))
    assert (await catalog.reserve_stock(request, metadata=key, timeout=10)).total_cents == 3 * 3499
    await catalog.reserve_stock(request, metadata=key, timeout=10)  # a repeat: the first answer
    other = catalog_pb2.ReserveStockRequest(order_id="o_8", lines=_lines(("p_teapot", 1)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the key, with another request
        await catalog.reserve_stock(other, metadata=key, timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    teapot = catalog_pb2.GetProductRequest(product_id="p_teapot")
    assert (await catalog.get_product(teapot)).product.stock == 7
    # A refusal is stored with its key: asked again, it is the same refusal, stock unchanged.
    big = catalog_pb2.ReserveStockRequest(order_id="o_9", lines=_lines(("p_teapot", 8)))
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await catalog.reserve_stock(
                big, metadata=[("idempotency-key", "saga-9/reserve")], timeout=10
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    undo = [("idempotency-key", "saga-7/reserve/compensate")]
    release = catalog_pb2.ReleaseStockRequest(order_id="o_7")
    for _ in range(2):
        await catalog.release_stock(release, metadata=undo, timeout=10)
    assert (await catalog.get_product(teapot)).product.stock == 10


def _product(product_id: str) -> catalog_pb2.GetProductRequest:
    return catalog_pb2.GetProductRequest(product_id=product_id)


async def test_a_created_product_is_restocked_once_per_key_and_sold(catalog: Client) -> None:
    created = await catalog.create_product(
        catalog_pb2.CreateProductRequest(product=catalog_pb2.Product(title="Spoon", price_cents=1))
    )
    made = created.product
    assert (made.currency, made.stock, made.state) == ("EUR", 0, catalog_pb2.Product.STATE_ACTIVE)
    order = catalog_pb2.ReserveStockRequest(order_id="o_s", lines=_lines((made.product_id, 3)))
    with pytest.raises(keel.errors.FailedPrecondition) as refused:
        await catalog.reserve_stock(order, timeout=10)
    assert refused.value.reason == "OUT_OF_STOCK"

    restock = catalog_pb2.RestockProductRequest(product_id=made.product_id, quantity=5)
    key = [("idempotency-key", "delivery-1")]
    first = await catalog.restock_product(restock, metadata=key, timeout=10)
    again = await catalog.restock_product(restock, metadata=key, timeout=10)  # a retry
    assert first == again
    assert first.product.stock == 5
    assert (await catalog.get_product(_product(made.product_id))).product.stock == 5
    other = catalog_pb2.RestockProductRequest(product_id=made.product_id, quantity=6)
    with pytest.raises(keel.errors.FailedPrecondition) as reused:
        await catalog.restock_product(other, metadata=key, timeout=10)
    assert reused.value.reason == "IDEMPOTENCY_KEY_REUSED"
    # Without a key of the caller's own, the generated client sends a fresh one: another restock.
    assert (await catalog.restock_product(restock, timeout=10)).product.stock == 10

    assert (await catalog.reserve_stock(order, timeout=10)).total_cents == 3
    assert (await catalog.get_product(_product(made.product_id))).product.stock == 7


async def test_restock_refusals_name_the_field(catalog: Client) -> None:
    too_many = catalog_pb2.RestockProductRequest(product_id="p_mug", quantity=101)
    with pytest.raises(keel.errors.InvalidArgument) as caught:
        await catalog.restock_product(too_many, timeout=10)
    assert [v.field for v in caught.value.field_violations] == ["quantity"]
    missing = catalog_pb2.RestockProductRequest(product_id="p_nope", quantity=1)
    with pytest.raises(keel.errors.NotFound) as gone:
        await catalog.restock_product(missing, timeout=10)
    assert gone.value.reason == "PRODUCT_NOT_FOUND"
    with pytest.raises(keel.errors.InvalidArgument):  # the proto's rule: positive
        await catalog.restock_product(
            catalog_pb2.RestockProductRequest(product_id="p_mug", quantity=0), timeout=10
        )
    with pytest.raises(keel.errors.InvalidArgument) as line:
        await catalog.reserve_stock(
            catalog_pb2.ReserveStockRequest(order_id="o_l", lines=_lines(("p_mug", 51))),
            timeout=10,
        )
    assert [v.field for v in line.value.field_violations] == ["lines[0].quantity"]
    assert (await catalog.get_product(_product("p_mug"))).product.stock == 200


async def test_an_archived_product_is_readable_but_neither_listed_nor_sold(
    catalog: Client,
) -> None:
    archive = catalog_pb2.ArchiveProductRequest(product_id="p_kettle")
    archived = (await catalog.archive_product(archive)).product
    assert archived.state == catalog_pb2.Product.STATE_ARCHIVED
    assert (await catalog.archive_product(archive)).product == archived  # again: the same
    assert (await catalog.get_product(_product("p_kettle"))).product == archived

    listed = await catalog.list_products(catalog_pb2.ListProductsRequest())
    assert [p.product_id for p in listed.products] == ["p_mug", "p_teapot"]
    everything = await catalog.list_products(catalog_pb2.ListProductsRequest(show_archived=True))
    assert [p.product_id for p in everything.products] == ["p_kettle", "p_mug", "p_teapot"]

    order = catalog_pb2.ReserveStockRequest(
        order_id="o_a", lines=_lines(("p_mug", 1), ("p_kettle", 1))
    )
    with pytest.raises(keel.errors.FailedPrecondition) as caught:
        await catalog.reserve_stock(order, timeout=10)
    assert (caught.value.reason, caught.value.domain) == ("PRODUCT_ARCHIVED", "catalog.acme")
    assert [v.field for v in caught.value.field_violations] == ["lines[1].product_id"]
    with pytest.raises(keel.errors.FailedPrecondition):
        await catalog.restock_product(
            catalog_pb2.RestockProductRequest(product_id="p_kettle", quantity=1), timeout=10
        )
    assert (await catalog.get_product(_product("p_mug"))).product.stock == 200

    unarchive = catalog_pb2.UnarchiveProductRequest(product_id="p_kettle")
    assert (await catalog.unarchive_product(unarchive)).product.state == (
        catalog_pb2.Product.STATE_ACTIVE
    )
    assert (await catalog.reserve_stock(order, timeout=10)).total_cents == 899 + 2999


async def test_a_keyed_refusal_is_stored_even_once_the_stock_is_there(catalog: Client) -> None:
    order = catalog_pb2.ReserveStockRequest(order_id="o_r", lines=_lines(("p_teapot", 12)))
    key = [("idempotency-key", "saga-r/reserve")]
    with pytest.raises(keel.errors.FailedPrecondition):
        await catalog.reserve_stock(order, metadata=key, timeout=10)
    await catalog.restock_product(
        catalog_pb2.RestockProductRequest(product_id="p_teapot", quantity=5), timeout=10
    )
    with pytest.raises(keel.errors.FailedPrecondition) as again:  # the first answer, replayed
        await catalog.reserve_stock(order, metadata=key, timeout=10)
    assert again.value.reason == "OUT_OF_STOCK"
    assert (await catalog.get_product(_product("p_teapot"))).product.stock == 15
    assert (await catalog.reserve_stock(order, timeout=10)).total_cents == 12 * 3499  # new key


async def test_a_product_in_another_currency_is_refused(catalog: Client) -> None:
    with pytest.raises(keel.errors.InvalidArgument) as caught:
        await catalog.create_product(
            catalog_pb2.CreateProductRequest(
                product=catalog_pb2.Product(title="Dime", price_cents=10, currency="USD")
            )
        )
    assert [v.field for v in caught.value.field_violations] == ["product.currency"]
