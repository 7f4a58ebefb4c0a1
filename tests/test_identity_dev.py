"""`keel dev` (what `make run` starts) with KEEL_JWT_SECRET set and nothing else: the gateway
and every service verify the user's token, in their own processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import keel
import pytest
from acme.orders.v1 import orders_keel, orders_pb2
from keel.runtime.config import Settings

from tests import devprocess
from tests.conftest import BIN, REPO, answers
from tests.devprocess import SERVICES

SECRET = "keel-dev-identity-secret-long-enough-for-hs256"


def _bearer(subject: str, expires: float = 300) -> str:
    body = {"sub": subject, "exp": int(time.time() + expires)}
    return f"Bearer {jwt.encode(body, SECRET, algorithm='HS256')}"


def _rest(url: str, body: Any = None, authorization: str = "") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": authorization} if authorization else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_keel_dev_with_a_secret_verifies_users_everywhere(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    ports = [devprocess.free_pair() for _ in SERVICES]
    gateway = devprocess.free_pair()
    lines = [f'"{name}" = "127.0.0.1:{port}"' for name, port in zip(SERVICES, ports, strict=True)]
    registry.write_text("[targets]\n" + "\n".join(lines) + "\n")
    log_path = tmp_path / "dev.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                *(str(BIN / "keel"), "dev", "--registry", str(registry)),
                *("--gateway-port", str(gateway), "--state-dir", str(tmp_path / "state")),
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**clean, "KEEL_JWT_SECRET": SECRET},
        )
    try:
        deadline = time.monotonic() + 60
        base = f"http://127.0.0.1:{gateway}"
        # Three services and the gateway say "serving"; the gateway answers its health check.
        while log_path.read_text().count("serving") < 4 or not answers(f"{base}/healthz"):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.1)
        order = {
            "customerId": "alice",
            "lines": [{"productId": "p_mug", "quantity": 1}],
            "paymentMethodToken": "tok_visa",
        }
        status, body = await asyncio.to_thread(_rest, f"{base}/v1/orders", order)
        assert status == 401  # the gateway verifies
        # Orders verifies the forwarded token, and so do catalog and payments, which it calls
        # for alice: the order is confirmed only if all of them accepted it.
        alice = _bearer("alice")
        status, body = await asyncio.to_thread(_rest, f"{base}/v1/orders", order, alice)
        assert (status, body["order"]["state"]) == (200, "ORDER_STATE_CONFIRMED"), body
        order_id = body["order"]["orderId"]
        status, _ = await asyncio.to_thread(_rest, f"{base}/v1/orders/{order_id}", None, alice)
        assert status == 200
        status, _ = await asyncio.to_thread(
            _rest, f"{base}/v1/orders/{order_id}", None, _bearer("bob")
        )
        assert status == 404
        settings = Settings(registry=str(registry))
        request = orders_pb2.GetOrderRequest(order_id=order_id)
        async with orders_keel.OrderServiceClient.connect(settings=settings) as orders:
            with pytest.raises(keel.errors.Unauthenticated) as forged:
                await orders.get_order(request, metadata=[("x-keel-subject", "alice")])
            assert forged.value.reason == "UNVERIFIED_IDENTITY"
            stale = [("authorization", _bearer("alice", expires=-3600))]
            with pytest.raises(keel.errors.Unauthenticated) as expired:
                await orders.get_order(request, metadata=stale)
            assert "expired" in expired.value.details()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()  # (a no-op once it exited)
        process.wait(timeout=30)  # reaped here, not left to warn in a later test
    output = log_path.read_text()
    assert "callers are not verified" not in output
    assert "Traceback" not in output
