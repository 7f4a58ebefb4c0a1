"""Catalog's product management needs the `catalog.write` scope, at the gateway and at the
catalog itself: with keys configured, a user with the scope creates, updates, restocks,
archives and unarchives; a user without it gets 403 / PERMISSION_DENIED, no token 401 /
UNAUTHENTICATED; reading products is public for everyone."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jwt
import keel
import keel.testing
import pytest
from acme.catalog.v1 import catalog_keel, catalog_pb2
from catalog.service import CatalogService
from catalog.settings import CatalogSettings
from catalog.store import MemoryStore, seed
from google.protobuf import field_mask_pb2
from keel.gateway import Gateway, RouteTable
from keel.runtime.config import Settings

from tests.conftest import REPO, serve_asgi
from tests.test_gateway import call

SECRET = "catalog-scope-test-secret-long-enough-for-hs256"
KEYS = Settings(jwt_secret=SECRET, jwt_audience="shop")
WRITER = {"scope": "catalog.write shop.buy"}
BUYER = {"scope": "shop.buy"}
Client = catalog_keel.CatalogServiceClient


def header(subject: str, **claims: Any) -> dict[str, str]:
    body = {"sub": subject, "aud": "shop", "exp": int(time.time()) + 300, **claims}
    return {"Authorization": f"Bearer {jwt.encode(body, SECRET, algorithm='HS256')}"}


def metadata(subject: str, **claims: Any) -> list[tuple[str, str]]:
    return keel.testing.bearer(subject, SECRET, aud="shop", **claims)


@dataclass
class Shop:
    url: str
    """The gateway's base URL."""
    catalog: Client
    """A client of the catalog's own server (no gateway between)."""


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    service = CatalogService(seed(MemoryStore()), CatalogSettings())
    async with keel.testing.cluster(service, keys=KEYS) as running:
        targets = {name: running.address(name) for name in running.servers}
        app = Gateway(RouteTable.from_generated(REPO / "gen"), targets=targets, settings=KEYS)
        async with serve_asgi(app) as url:
            yield Shop(url, running.client(Client))


async def test_a_writer_manages_products_through_the_gateway(shop: Shop) -> None:
    alice = header("alice", **WRITER)
    made = await call(
        f"{shop.url}/v1/products", "POST", {"title": "Spoon", "priceCents": 250}, headers=alice
    )
    assert made.status == 200, made.body
    product = made.body["product"]  # type: ignore[index]
    pid = product["productId"]
    assert (product["currency"], product["state"]) == ("EUR", "STATE_ACTIVE")
    renamed = await call(f"{shop.url}/v1/products/{pid}", "PATCH", {"title": "Teaspoon"}, alice)
    assert renamed.body["product"]["title"] == "Teaspoon"  # type: ignore[index]

    keyed = {**alice, "Idempotency-Key": "delivery-42"}
    restock = f"{shop.url}/v1/products/{pid}:restock"
    first = await call(restock, "POST", {"quantity": 5}, headers=keyed)
    again = await call(restock, "POST", {"quantity": 5}, headers=keyed)  # the caller's retry
    assert first.status == again.status == 200
    assert first.body == again.body
    assert first.body["product"]["stock"] == 5  # type: ignore[index]
    reused = await call(restock, "POST", {"quantity": 6}, headers=keyed)
    assert reused.status == 400
    assert reused.body["details"][0]["reason"] == "IDEMPOTENCY_KEY_REUSED"  # type: ignore[index]

    archived = await call(f"{shop.url}/v1/products/{pid}:archive", "POST", {}, headers=alice)
    assert archived.body["product"]["state"] == "STATE_ARCHIVED"  # type: ignore[index]
    listed = await call(f"{shop.url}/v1/products")
    assert pid not in [p["productId"] for p in listed.body["products"]]  # type: ignore[index]
    shown = await call(f"{shop.url}/v1/products?showArchived=true")
    assert pid in [p["productId"] for p in shown.body["products"]]  # type: ignore[index]
    back = await call(f"{shop.url}/v1/products/{pid}:unarchive", "POST", {}, headers=alice)
    assert back.body["product"]["state"] == "STATE_ACTIVE"  # type: ignore[index]

    for who in (alice, header("bob", **BUYER), {}):  # public reads, for everyone
        read = await call(f"{shop.url}/v1/products/{pid}", headers=who)
        assert (read.status, read.body["stock"]) == (200, 5)  # type: ignore[index]


WRITES = [
    ("POST", "/v1/products", {"title": "Fork", "priceCents": 1}),
    ("PATCH", "/v1/products/p_mug", {"title": "Cup"}),
    ("POST", "/v1/products/p_mug:restock", {"quantity": 1000}),
    ("POST", "/v1/products/p_mug:archive", {}),
    ("POST", "/v1/products/p_mug:unarchive", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
async def test_without_the_scope_the_gateway_refuses_writes(
    shop: Shop, method: str, path: str, body: dict[str, Any]
) -> None:
    forbidden = await call(f"{shop.url}{path}", method, body, headers=header("bob", **BUYER))
    assert forbidden.status == 403, forbidden.body
    anonymous = await call(f"{shop.url}{path}", method, body)
    assert anonymous.status == 401, anonymous.body
    mug = await call(f"{shop.url}/v1/products/p_mug")
    seen = mug.body["title"], mug.body["stock"], mug.body["state"]  # type: ignore[index]
    assert seen == ("Mug", 200, "STATE_ACTIVE")  # nothing changed
    listed = await call(f"{shop.url}/v1/products?showArchived=true", headers=header("bob"))
    assert len(listed.body["products"]) == 3  # type: ignore[index]


def _writes(product_id: str) -> list[tuple[str, Any]]:
    """Each write rpc of the catalog, with a request for `product_id`."""
    return [
        (
            "create_product",
            catalog_pb2.CreateProductRequest(product=catalog_pb2.Product(title="Fork")),
        ),
        (
            "update_product",
            catalog_pb2.UpdateProductRequest(
                product=catalog_pb2.Product(product_id=product_id, title="Cup"),
                update_mask=field_mask_pb2.FieldMask(paths=["title"]),
            ),
        ),
        ("restock_product", catalog_pb2.RestockProductRequest(product_id=product_id, quantity=3)),
        ("archive_product", catalog_pb2.ArchiveProductRequest(product_id=product_id)),
        ("unarchive_product", catalog_pb2.UnarchiveProductRequest(product_id=product_id)),
    ]


async def test_over_grpc_the_catalog_itself_holds_the_scope(shop: Shop) -> None:
    bob, anonymous = metadata("bob", **BUYER), None
    for name, request in _writes("p_teapot"):
        with pytest.raises(keel.errors.PermissionDenied) as caught:
            await getattr(shop.catalog, name)(request, metadata=bob, timeout=10)
        assert caught.value.reason == "MISSING_SCOPE", name
        with pytest.raises(keel.errors.Unauthenticated) as missing:
            await getattr(shop.catalog, name)(request, metadata=anonymous, timeout=10)
        assert missing.value.reason == "TOKEN_REQUIRED", name
    teapot = catalog_pb2.GetProductRequest(product_id="p_teapot")
    unchanged = (await shop.catalog.get_product(teapot)).product
    assert (unchanged.title, unchanged.stock) == ("Teapot", 10)

    alice = metadata("alice", **WRITER)
    done = {}
    for name, request in _writes("p_teapot"):
        done[name] = (
            await getattr(shop.catalog, name)(request, metadata=alice, timeout=10)
        ).product
    assert done["create_product"].title == "Fork"
    assert done["update_product"].title == "Cup"
    assert done["restock_product"].stock == 13
    assert done["archive_product"].state == catalog_pb2.Product.STATE_ARCHIVED
    assert done["unarchive_product"].state == catalog_pb2.Product.STATE_ACTIVE

    for who in (alice, bob, anonymous):  # public reads, for everyone
        read = await shop.catalog.get_product(teapot, metadata=who)
        assert (read.product.title, read.product.stock) == ("Cup", 13)
        listed = await shop.catalog.list_products(catalog_pb2.ListProductsRequest(), metadata=who)
        assert len(listed.products) == 4
