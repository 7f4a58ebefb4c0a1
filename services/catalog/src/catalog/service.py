"""acme.catalog.v1.CatalogService over the catalog domain: proto in, proto out.

CreateProduct, RestockProduct, ReserveStock and ReleaseStock are keyed (keel.idempotency): a
call carrying an `idempotency-key` (a generated client's, an order saga's step) has its effect
once, stored with the key in the same transaction; a repeat gets the first answer (or the first
final error) back. The shop's settings (catalog.settings) come in once, at construction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keel
import keel.idempotency
from acme.catalog.v1 import catalog_keel, catalog_pb2
from google.protobuf import timestamp_pb2
from keel.data import PageTokenError, decode_page_token, encode_page_token

from catalog.domain import Catalog, Product
from catalog.refusals import refusals
from catalog.settings import CatalogSettings, load
from catalog.store import SqlStore

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

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
        state=catalog_pb2.Product.State.Value(f"STATE_{product.state.value}"),
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
            "the page token is not one this service issued",
            field_violations={"page_token": "use the next page token of a previous response"},
        )
    return key[0]


class CatalogService(catalog_keel.CatalogServiceBase):
    """The catalog over gRPC, on `store`, with the shop's `settings` (default: read from the
    environment now, catalog.settings.load)."""

    def __init__(self, store: SqlStore, settings: CatalogSettings | None = None) -> None:
        self.store = store
        self.policy = (settings or load()).policy()
        self.catalog = Catalog(store, self.policy)

    def _joined(self, session: AsyncSession) -> Catalog:
        """The rules within a keyed call's transaction."""
        return Catalog(self.store.joined(session), self.policy)

    async def __keel_close__(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            await close()

    async def get_product(
        self, request: catalog_pb2.GetProductRequest, context: keel.Context
    ) -> catalog_pb2.GetProductResponse:
        with refusals():
            product = await self.catalog.get(request.product_id)
        return catalog_pb2.GetProductResponse(product=to_proto(product))

    async def list_products(
        self, request: catalog_pb2.ListProductsRequest, context: keel.Context
    ) -> catalog_pb2.ListProductsResponse:
        products, last = await self.catalog.page(
            _after(request.page_token), request.page_size, archived=request.show_archived
        )
        return catalog_pb2.ListProductsResponse(
            products=[to_proto(p) for p in products],
            next_page_token="" if last is None else encode_page_token([last]),
        )

    async def create_product(
        self, request: catalog_pb2.CreateProductRequest, context: keel.Context
    ) -> catalog_pb2.CreateProductResponse:
        await self.store.ready()
        given, reply = request.product, catalog_pb2.CreateProductResponse
        async with keel.idempotency.call(self.store.db, context, request, reply) as call:
            if call.replay is not None:
                return call.replay
            with refusals():
                product = await self._joined(call.session).create(
                    given.title, given.price_cents, given.currency, labels=dict(given.labels)
                )
            return call.respond(reply(product=to_proto(product)))

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
        with refusals("product.product_id"):
            product = await self.catalog.update(given.product_id, **changes)
        return catalog_pb2.UpdateProductResponse(product=to_proto(product))

    async def restock_product(
        self, request: catalog_pb2.RestockProductRequest, context: keel.Context
    ) -> catalog_pb2.RestockProductResponse:
        await self.store.ready()
        reply = catalog_pb2.RestockProductResponse
        async with keel.idempotency.call(self.store.db, context, request, reply) as call:
            if call.replay is not None:
                return call.replay
            with refusals():
                product = await self._joined(call.session).restock(
                    request.product_id, request.quantity
                )
            return call.respond(reply(product=to_proto(product)))

    async def archive_product(
        self, request: catalog_pb2.ArchiveProductRequest, context: keel.Context
    ) -> catalog_pb2.ArchiveProductResponse:
        with refusals():
            product = await self.catalog.archive(request.product_id)
        return catalog_pb2.ArchiveProductResponse(product=to_proto(product))

    async def unarchive_product(
        self, request: catalog_pb2.UnarchiveProductRequest, context: keel.Context
    ) -> catalog_pb2.UnarchiveProductResponse:
        with refusals():
            product = await self.catalog.unarchive(request.product_id)
        return catalog_pb2.UnarchiveProductResponse(product=to_proto(product))

    async def reserve_stock(
        self, request: catalog_pb2.ReserveStockRequest, context: keel.Context
    ) -> catalog_pb2.ReserveStockResponse:
        lines = [(line.product_id, line.quantity) for line in request.lines]
        await self.store.ready()
        reply = catalog_pb2.ReserveStockResponse
        async with keel.idempotency.call(self.store.db, context, request, reply) as call:
            if call.replay is not None:
                return call.replay
            with refusals([product_id for product_id, _ in lines]):
                reservation = await self._joined(call.session).reserve(request.order_id, lines)
            return call.respond(
                reply(total_cents=reservation.total_cents, currency=reservation.currency)
            )

    async def release_stock(
        self, request: catalog_pb2.ReleaseStockRequest, context: keel.Context
    ) -> catalog_pb2.ReleaseStockResponse:
        await self.store.ready()
        reply = catalog_pb2.ReleaseStockResponse
        async with keel.idempotency.call(self.store.db, context, request, reply) as call:
            if call.replay is None:
                with refusals():
                    await self._joined(call.session).release(request.order_id)
                call.respond(reply())
        return reply()
