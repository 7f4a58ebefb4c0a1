"""`python -m keel.mock` in real processes: health, reflection, a generated client, the stub
file of docs/mock.md, the admin API, the REST gateway in front, record then replay, events."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from acme.catalog.v1 import catalog_keel, catalog_pb2
from acme.payments.v1 import payments_keel, payments_pb2
from google.protobuf import descriptor_pb2, json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from keel import errors
from keel.mock import MockServer
from keel.runtime import validation
from keel.testing.nats import Broker, eventually, nats_broker

from tests.conftest import BIN, REPO, answers, free_port

__all__ = ["nats_broker"]  # the fixture, for pytest

PAYMENTS = "acme.payments.v1.PaymentService"
CATALOG = "acme.catalog.v1.CatalogService"
ORDERS = "acme.orders.v1.OrderService"


def docs_example() -> str:
    """The stub file shown in docs/mock.md."""
    page = (REPO / "docs/mock.md").read_text()
    found = re.search(
        r"<!-- mock-example:start -->\n```yaml\n(.*?)```\n<!-- mock-example:end -->", page, re.S
    )
    assert found, "docs/mock.md lost its example"
    return found.group(1)


class Mock:
    """A `python -m keel.mock` process and its ports."""

    def __init__(self, process: subprocess.Popen[str], serving: dict[str, Any]) -> None:
        self.process = process
        self.port = int(serving["port"])
        self.admin_port = serving.get("admin_port")
        self.address = f"127.0.0.1:{self.port}"

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}{path}", data=data, method=method
        )
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with direct.open(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


def _environment(extra: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
    return {**clean, "KEEL_LOG_FORMAT": "json", **extra}


@asynccontextmanager
async def mock_process(*args: str | Path, env: dict[str, str] | None = None) -> AsyncIterator[Mock]:
    """`python -m keel.mock --port 0 ARGS` until the block ends; waits for its `serving` line
    and its health (SERVING)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "keel.mock", "--port", "0", *map(str, args)],
        cwd=REPO,
        env=_environment(env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        serving: dict[str, Any] = {}
        while serving.get("event") != "serving":
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
            assert line, f"keel mock exited: {process.stderr.read() if process.stderr else ''}"
            serving = json.loads(line)
        mock = Mock(process, serving)
        async with grpc.aio.insecure_channel(mock.address) as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)  # (typed for sync channels)
            answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        yield mock
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.fixture
def docs_stubs(tmp_path: Path) -> Path:
    path = tmp_path / "payments.yaml"
    path.write_text(docs_example())
    return path


async def test_serves_the_docs_stubs_with_health_reflection_and_generated_data(
    docs_stubs: Path,
) -> None:
    async with mock_process(
        "--seed", "3", "--stubs", docs_stubs, "--admin-port", "0", PAYMENTS, CATALOG
    ) as mock:
        async with grpc.aio.insecure_channel(mock.address) as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)  # (typed for sync channels)
            for name in (PAYMENTS, CATALOG):
                answer = await health.Check(health_pb2.HealthCheckRequest(service=name))
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            reflect: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]
            requests = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=PAYMENTS),
            ]
            listed, described = [r async for r in reflect.ServerReflectionInfo(iter(requests))]
            names = {s.name for s in listed.list_services_response.service}
            assert {PAYMENTS, CATALOG, "grpc.health.v1.Health"} <= names
            files = described.file_descriptor_response.file_descriptor_proto
            proto = descriptor_pb2.FileDescriptorProto.FromString(files[0])
            assert proto.name == "acme/payments/v1/payments.proto"

        async with payments_keel.PaymentServiceClient.connect(mock.address) as payments:
            got = await payments.get_payment(payments_pb2.GetPaymentRequest(payment_id="x"))
            assert (got.payment.payment_id, got.payment.amount_cents) == ("pay_1", 1250)
            declined = payments_pb2.AuthorizePaymentRequest(
                order_id="declined-1", amount_cents=5, currency="EUR", payment_method_token="t"
            )
            with pytest.raises(errors.FailedPrecondition) as raised:
                await payments.authorize_payment(declined)
            assert raised.value.reason == "CARD_DECLINED"
            assert raised.value.metadata == {"issuer": "test-bank"}
            flaky = payments_pb2.CapturePaymentRequest(payment_id="pay_flaky")
            with pytest.raises(errors.FailedPrecondition, match="not yet authorized"):
                await payments.capture_payment(flaky)
            captured = await payments.capture_payment(flaky)
            assert captured.payment.state == payments_pb2.PAYMENT_STATE_CAPTURED
            with pytest.raises(errors.InvalidArgument):  # validated as the real service does
                await payments.get_payment(payments_pb2.GetPaymentRequest())
        async with catalog_keel.CatalogServiceClient.connect(mock.address) as catalog:
            product = await catalog.get_product(catalog_pb2.GetProductRequest(product_id="p1"))
            validation.check(product)
            assert re.fullmatch("[A-Z]{3}", product.product.currency)

        status, calls = await asyncio.to_thread(mock.admin, "GET", "/calls?method=CapturePayment")
        assert status == 200
        assert [c["request"] for c in calls["calls"]] == [{"payment_id": "pay_flaky"}] * 2
        status, stubs = await asyncio.to_thread(mock.admin, "GET", "/stubs")
        assert [s["used"] for s in stubs["stubs"]] == [1, 1, 2]


async def test_the_rest_gateway_in_front_answers_valid_json(docs_stubs: Path) -> None:
    async with mock_process("--stubs", docs_stubs, PAYMENTS, CATALOG) as mock:
        port = free_port()
        gateway = subprocess.Popen(
            [
                BIN / "keel",
                "gateway",
                "--port",
                str(port),
                "--target",
                f"{PAYMENTS}={mock.address}",
                "--target",
                f"{CATALOG}={mock.address}",
            ],
            cwd=REPO,
            env=_environment({}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            await eventually(
                lambda: asyncio.to_thread(answers, f"{base}/v1/products"), 60, "gateway"
            )
            body = await asyncio.to_thread(_get_json, f"{base}/v1/products/p-1")
            product = json_format.ParseDict(body, catalog_pb2.Product())
            validation.check(catalog_pb2.GetProductResponse(product=product))
            assert product.product_id
            listed = await asyncio.to_thread(_get_json, f"{base}/v1/products")
            assert listed["products"]
            payment = await asyncio.to_thread(_get_json, f"{base}/v1/payments/any")
            assert payment["payment"]["paymentId"] == "pay_1"
        finally:
            gateway.terminate()
            gateway.communicate(timeout=30)


def _get_json(url: str) -> Any:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


async def test_record_then_replay(tmp_path: Path) -> None:
    recorded = tmp_path / "recorded.yaml"
    real = MockServer([CATALOG], gen=REPO / "gen", seed=11, log_calls=False)

    def fresh_stubs() -> None:  # the real server's answers, from the first one again
        real.clear_stubs()
        real.stub(
            "GetProduct",
            match={"equals": {"product_id": "p-1"}},
            sequence=[
                {
                    "respond": {
                        "product": {"productId": "p-1", "title": "Lamp", "priceCents": "999"}
                    }
                },
                {
                    "error": {
                        "code": "NOT_FOUND",
                        "message": "gone",
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                "reason": "ARCHIVED",
                            }
                        ],
                    }
                },
            ],
        )

    async def exercise(address: str) -> list[Any]:
        seen: list[Any] = []
        async with catalog_keel.CatalogServiceClient.connect(address) as catalog:
            for product_id in ("p-1", "p-1", "p-2"):
                try:
                    got = await catalog.get_product(
                        catalog_pb2.GetProductRequest(product_id=product_id)
                    )
                    seen.append(json_format.MessageToDict(got))
                except errors.NotFound as error:
                    seen.append(("NOT_FOUND", error.message, error.reason))
        return seen

    async with real:
        fresh_stubs()
        direct = await exercise(real.address)
        fresh_stubs()
        real.clear_calls()
        async with mock_process(
            "--record", real.address, "--stubs-out", recorded, CATALOG
        ) as recorder:
            through = await exercise(recorder.address)
    assert direct[0]["product"]["title"] == "Lamp"
    assert direct[1] == ("NOT_FOUND", "gone", "ARCHIVED")
    assert through[:2] == direct[:2]
    assert len(real.calls("GetProduct")) == 3  # every call went to the real server
    written = recorded.read_text()
    assert "sequence:" in written
    assert "ARCHIVED" in written
    async with mock_process("--stubs", recorded, CATALOG) as replay:
        assert await exercise(replay.address) == through


def _mock_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m keel.mock ARGUMENTS`, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "keel.mock", *arguments],
        cwd=REPO,
        env=_environment({}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_bad_arguments_exit_2_naming_the_problem(tmp_path: Path) -> None:
    unknown = _mock_cli("--port", "0", "acme.nope.v1.Nope")
    assert unknown.returncode == 2
    assert "no service acme.nope.v1.Nope" in unknown.stderr
    assert PAYMENTS in unknown.stderr  # the known ones are listed
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stubs": [{"method": "GetPayment", "respond": {"nope": 1}}]}))
    refused = _mock_cli("--port", "0", "--stubs", str(bad), PAYMENTS)
    assert refused.returncode == 2
    assert "nope" in refused.stderr
    with socket.socket() as holder:  # a service already on the port: not shared with it
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        taken = _mock_cli("--port", str(port), PAYMENTS)
    assert taken.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} for gRPC" in taken.stderr
    assert "Traceback" not in taken.stderr


async def test_declared_events_are_published_on_demand(nats_broker: Broker) -> None:
    import nats  # noqa: PLC0415

    env = {"KEEL_NATS_URL": nats_broker.url}
    async with mock_process("--admin-port", "0", ORDERS, env=env) as mock:
        body = {"orderId": "ord_1", "customerId": "cus_1"}
        status, answer = await asyncio.to_thread(
            mock.admin, "POST", "/events/acme.orders.v1.OrderPlaced", body
        )
        assert status == 200, answer
        missing = await asyncio.to_thread(mock.admin, "POST", "/events/acme.nope.v1.Nope", {})
        assert missing[0] == 404
        bad = await asyncio.to_thread(
            mock.admin, "POST", "/events/acme.orders.v1.OrderPlaced", {"nope": 1}
        )
        assert bad[0] == 400
    client = await nats.connect(nats_broker.url)
    try:
        js = client.jetstream()
        message = await js.get_last_msg("ACME_ORDERS_V1", "acme.orders.v1.order.placed")
    finally:
        await client.close()
    headers = message.headers or {}
    assert headers["Keel-Event-Id"] == headers["Nats-Msg-Id"] == answer["id"]
    assert headers["Keel-Event"] == "acme.orders.v1.OrderPlaced"
    from acme.orders.v1 import orders_pb2  # noqa: PLC0415

    placed = orders_pb2.OrderPlaced.FromString(message.data or b"")
    assert (placed.order_id, placed.customer_id) == ("ord_1", "cus_1")


def test_register_adds_the_mock_command() -> None:
    import argparse  # noqa: PLC0415

    from keel.mock import cli  # noqa: PLC0415

    root = argparse.ArgumentParser(prog="keel")
    cli.register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(["mock", "--port", "0", "--seed", "4", "--stubs", "a.yaml", PAYMENTS])
    assert args.run is cli.run
    assert (args.services, args.seed, args.port) == ([PAYMENTS], 4, 0)
    assert [str(p) for p in args.stubs] == ["a.yaml"]
    record_only = root.parse_args(["mock", "--record", "127.0.0.1:1", PAYMENTS])
    assert cli.run(record_only) == 2  # --record needs --stubs-out
