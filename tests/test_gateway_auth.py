"""JWT authentication at the gateway: per-method policy from the protos, 401/403, claims."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import jwt
import keel
import keel.testing
import pytest
from catalog.service import CatalogService
from catalog.store import MemoryStore, seed
from cryptography.hazmat.primitives.asymmetric import rsa
from keel.gateway import Gateway, RouteTable
from keel.runtime.config import Settings
from orders.service import OrderService
from payments.service import PaymentService
from structlog.testing import capture_logs

from tests.conftest import REPO, serve_asgi
from tests.test_gateway import call

SECRET = "test-secret-that-is-long-enough-for-hs256"


class SeeingPayments(PaymentService):
    """Records the identity metadata each call brought."""

    seen: ClassVar[list[dict[str, str]]] = []

    async def get_payment(self, request: Any, context: keel.Context) -> Any:
        metadata = dict(context.invocation_metadata() or ())
        SeeingPayments.seen.append(
            {k: str(v) for k, v in metadata.items() if k.startswith("x-keel-")}
        )
        return await super().get_payment(request, context)


async def _serve(settings: Settings) -> AsyncIterator[str]:
    services = [CatalogService(seed(MemoryStore())), OrderService(), SeeingPayments()]
    async with keel.testing.cluster(*services) as running:
        targets = {name: running.address(name) for name in running.servers}
        app = Gateway(RouteTable.from_generated(REPO / "gen"), targets=targets, settings=settings)
        async with serve_asgi(app) as url:
            yield url


@pytest.fixture
async def gateway() -> AsyncIterator[str]:
    async for url in _serve(Settings(jwt_secret=SECRET, jwt_audience="shop")):
        yield url


def _token(key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    body = {"sub": "u_1", "aud": "shop", "exp": int(time.time()) + 60, **claims}
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": "k1"})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_public_method_needs_no_token(gateway: str) -> None:
    assert (await call(f"{gateway}/v1/products/p_mug")).status == 200


@pytest.mark.parametrize(
    ("make_headers", "error"),
    [
        (lambda: {}, "invalid_request"),
        (lambda: _bearer("not-a-jwt"), "invalid_token"),
        (lambda: _bearer(_token(key="another-secret-that-is-long-enough")), "invalid_token"),
        (lambda: _bearer(_token(exp=int(time.time()) - 10)), "invalid_token"),
        (lambda: _bearer(_token(aud="elsewhere")), "invalid_token"),
    ],
    ids=["no-token", "garbage", "wrong-key", "expired", "wrong-audience"],
)
async def test_unmarked_method_needs_a_valid_token(
    gateway: str, make_headers: Callable[[], dict[str, str]], error: str
) -> None:
    reply = await call(f"{gateway}/v1/customers/c_1/orders", headers=make_headers())
    assert reply.status == 401
    assert reply.body["code"] == 16  # type: ignore[index]
    assert f'error="{error}"' in reply.headers["www-authenticate"]


async def test_valid_token_passes_and_claims_reach_the_service(gateway: str) -> None:
    ok = await call(f"{gateway}/v1/customers/c_1/orders", headers=_bearer(_token()))
    assert ok.status == 200
    SeeingPayments.seen.clear()
    spoofed = {"Grpc-Metadata-X-Keel-Subject": "admin"}
    payment = await call(
        f"{gateway}/v1/payments/pay_404",
        headers={**_bearer(_token(scope="payments.read other")), **spoofed},
    )
    assert payment.status == 404  # authorized, then the service answered
    (seen,) = SeeingPayments.seen
    assert seen["x-keel-subject"] == "u_1"  # from the token, not the spoofed header
    assert json.loads(seen["x-keel-claims"])["scope"] == "payments.read other"


async def test_missing_scope_is_403(gateway: str) -> None:
    reply = await call(f"{gateway}/v1/payments/pay_1", headers=_bearer(_token(scope="other")))
    assert reply.status == 403
    assert reply.body["code"] == 7  # type: ignore[index]
    assert 'error="insufficient_scope"' in reply.headers["www-authenticate"]
    listed = await call(
        f"{gateway}/v1/payments/pay_1", headers=_bearer(_token(scp=["payments.read"]))
    )
    assert listed.status == 404  # scopes as a list (scp) count too


async def test_jwks_file_with_rsa_keys(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    async for url in _serve(Settings(jwks_file=str(jwks))):
        good = _token(key=private, algorithm="RS256", aud=None)
        assert (await call(f"{url}/v1/customers/c_1/orders", headers=_bearer(good))).status == 200
        forged = _token(key=SECRET, algorithm="HS256")
        assert (await call(f"{url}/v1/customers/c_1/orders", headers=_bearer(forged))).status == 401


async def test_without_keys_calls_pass_and_a_warning_is_logged() -> None:
    with capture_logs() as logs:
        Gateway(RouteTable.from_generated(REPO / "gen"), settings=Settings())
    assert any("NO AUTHENTICATION" in entry["event"] for entry in logs)
    async for url in _serve(Settings()):
        assert (await call(f"{url}/v1/customers/c_1/orders")).status == 200
