"""acme.catalog.v1.CatalogService over the catalog domain: proto in, proto out.

ReserveStock and ReleaseStock are keyed (keel.idempotency): a call carrying an
`idempotency-key` (an order saga's step) has its effect once, stored with the key in the
same transaction; a repeat gets the first answer (or the first final error) back.
"""

from __future__ import annotations

import keel
import keel.idempotency
from acme.catalog.v1 import catalog_keel, catalog_pb2
from google.protobuf import timestamp_pb2
from keel.data import PageTokenError, decode_page_token, encode_page_token

from catalog.domain import (
    Catalog,
    ConflictError,
    MixedCurrenciesError,
    NotFoundError,
    OutOfStockError,
    Product,
    ReleasedError,
)
from catalog.store import SqlStore

DEFAULT_PAGE_SIZE = 50
UPDATABLE = {"title", "price_cents", "currency", "labels"}


def to_proto(product: Product) -> catalog_pb2.Product:
    created = timestamp_pb2.Timestamp()
    created.FromDatetime(product.created)
    return catalog_pb2.Product(
        product_id=product.product_id,
        title=product.title,
        price_cents=product.price_cents,
        currency=product.currency,
        stock=product.stock,
        labels=product.labels,
        create_time=created,
        units_sold=product.units_sold,
    )


def _after(token: str) -> str:
    """The last product id of the previous page (keyset pagination: stable under inserts)."""
    try:
        key = decode_page_token(token)
    except PageTokenError:
        key = None
    if key == ():
        return ""
    if key is None or len(key) != 1 or not isinstance(key[0], str):
        raise keel.errors.InvalidArgument(
            "page_token is not one this service issued",
            field_violations={"page_token": "use next_page_token from a previous response"},
        )
    return key[0]


class CatalogService(catalog_keel.CatalogServiceBase):
    """The catalog over gRPC."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.catalog = Catalog(store)

    async def __keel_close__(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            await close()

    async def _get(self, product_id: str) -> Product:
        try:
            return await self.catalog.get(product_id)
        except NotFoundError:
            raise keel.errors.NotFound(f"product {product_id} does not exist") from None

    async def get_product(
        self, request: catalog_pb2.GetProductRequest, context: keel.Context
    ) -> catalog_pb2.GetProductResponse:
        return catalog_pb2.GetProductResponse(product=to_proto(await self._get(request.product_id)))

    async def list_products(
        self, request: catalog_pb2.ListProductsRequest, context: keel.Context
    ) -> catalog_pb2.ListProductsResponse:
        products, last = await self.catalog.page(
            _after(request.page_token), request.page_size or DEFAULT_PAGE_SIZE
        )
        return catalog_pb2.ListProductsResponse(
            products=[to_proto(p) for p in products],
            next_page_token="" if last is None else encode_page_token([last]),
        )

    async def create_product(
        self, request: catalog_pb2.CreateProductRequest, context: keel.Context
    ) -> catalog_pb2.CreateProductResponse:
        given = request.product
        product = await self.catalog.create(
            given.title, given.price_cents, given.currency or "EUR", labels=dict(given.labels)
        )
        return catalog_pb2.CreateProductResponse(product=to_proto(product))

    async def update_product(
        self, request: catalog_pb2.UpdateProductRequest, context: keel.Context
    ) -> catalog_pb2.UpdateProductResponse:
        paths = list(request.update_mask.paths) or sorted(UPDATABLE)
        unknown = [p for p in paths if p not in UPDATABLE]
        if unknown:
            raise keel.errors.InvalidArgument(
                "update_mask names fields that cannot be changed",
                field_violations={
                    f"update_mask.paths[{paths.index(p)}]": f"{p!r} cannot be changed"
                    for p in unknown
                },
            )
        given = request.product
        changes = {p: dict(given.labels) if p == "labels" else getattr(given, p) for p in paths}
        try:
            product = await self.catalog.update(given.product_id, **changes)
        except NotFoundError:
            raise keel.errors.NotFound(f"product {given.product_id} does not exist") from None
        return catalog_pb2.UpdateProductResponse(product=to_proto(product))

    async def reserve_stock(
        self, request: catalog_pb2.ReserveStockRequest, context: keel.Context
    ) -> catalog_pb2.ReserveStockResponse:
        lines = [(line.product_id, line.quantity) for line in request.lines]
        unknown = await self.catalog.missing([product_id for product_id, _ in lines])
        missing = {
            f"lines[{i}].product_id": f"product {product_id} does not exist"
            for i, (product_id, _) in enumerate(lines)
            if product_id in unknown
        }
        if missing:
            raise keel.errors.NotFound(
                next(iter(missing.values())),
                field_violations=missing,
                reason="PRODUCT_NOT_FOUND",
                domain="catalog.acme",
            )
        await self.store.ready()
        try:
            async with keel.idempotency.call(
                self.store.db, context, request, catalog_pb2.ReserveStockResponse
            ) as call:
                if call.replay is not None:
                    return call.replay
                catalog = Catalog(self.store.joined(call.session))
                reservation = await catalog.reserve(request.order_id, lines)
                return call.respond(
                    catalog_pb2.ReserveStockResponse(
                        total_cents=reservation.total_cents, currency=reservation.currency
                    )
                )
        except OutOfStockError as error:
            raise keel.errors.FailedPrecondition(
                "not enough stock",
                field_violations={
                    f"lines[{i}].quantity": f"{asked} asked, {available} in stock"
                    for i, (product_id, _) in enumerate(lines)
                    if product_id in error.shortages
                    for asked, available in [error.shortages[product_id]]
                },
                reason="OUT_OF_STOCK",
                domain="catalog.acme",
            ) from None
        except NotFoundError as error:  # deleted since the check above
            raise keel.errors.NotFound(
                f"product {error.args[0]} does not exist", reason="PRODUCT_NOT_FOUND"
            ) from None
        except ConflictError:
            raise keel.errors.Aborted(
                f"order {request.order_id} is being reserved by another call: try again"
            ) from None
        except ReleasedError:
            raise keel.errors.FailedPrecondition(
                f"order {request.order_id}'s stock was released: it reserves nothing more",
                reason="ORDER_RELEASED",
                domain="catalog.acme",
            ) from None
        except MixedCurrenciesError as error:
            raise keel.errors.FailedPrecondition(
                f"an order cannot mix currencies {error.args[0]}", reason="MIXED_CURRENCIES"
            ) from None

    async def release_stock(
        self, request: catalog_pb2.ReleaseStockRequest, context: keel.Context
    ) -> catalog_pb2.ReleaseStockResponse:
        await self.store.ready()
        try:
            async with keel.idempotency.call(
                self.store.db, context, request, catalog_pb2.ReleaseStockResponse
            ) as call:
                if call.replay is None:
                    await Catalog(self.store.joined(call.session)).release(request.order_id)
                    call.respond(catalog_pb2.ReleaseStockResponse())
        except ConflictError:
            raise keel.errors.Aborted(
                f"order {request.order_id} is being released by another call: try again"
            ) from None
        return catalog_pb2.ReleaseStockResponse()
