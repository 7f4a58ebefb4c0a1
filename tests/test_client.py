"""Generated clients: deadlines, propagation, retries, circuit breaking, discovery, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import keel
import pytest
from keel.runtime.breaker import BREAKERS
from keel.runtime.config import ConfigError
from prometheus_client import REGISTRY

from tests.conftest import free_port
from tests.servers.kitchen_server import Front, Pantry, kitchen_keel, kitchen_pb2

FAST_RECONNECT = (("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 100))


@pytest.fixture
async def pantry() -> AsyncIterator[tuple[Pantry, str]]:
    impl = Pantry()
    async with keel.Server([impl], port=0, log_calls=False) as server:
        yield impl, f"127.0.0.1:{server.port}"


async def _front(impl: Front) -> tuple[keel.Server, str]:
    server = keel.Server([impl], port=0, log_calls=False)
    await server.start()
    return server, f"127.0.0.1:{server.port}"


async def test_inbound_deadline_bounds_outbound_calls(pantry: tuple[Pantry, str]) -> None:
    recorder, pantry_target = pantry
    server, target = await _front(Front(pantry_target))
    try:
        async with kitchen_keel.KitchenServiceClient.connect(target) as client:
            await client.cook(kitchen_pb2.CookRequest(), timeout=0.8)
    finally:
        await server.stop(0)
    # The pantry client's own default is KEEL_DEFAULT_TIMEOUT (10 s): the inbound 0.8 s won
    # (grpc-timeout rounds a deadline up a little on the wire, so the pantry may see 0.80x).
    (seen,) = recorder.seen
    assert 0 < seen["remaining"] < 1


async def test_metadata_propagates_to_downstream_calls(pantry: tuple[Pantry, str]) -> None:
    recorder, pantry_target = pantry
    front = Front(pantry_target)
    server, target = await _front(front)
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    try:
        async with kitchen_keel.KitchenServiceClient.connect(target) as client:
            await client.cook(
                kitchen_pb2.CookRequest(),
                metadata=[
                    ("x-request-id", "req-42"),
                    ("traceparent", trace),
                    ("x-keel-subject", "u-7"),
                ],
            )
            await client.cook(kitchen_pb2.CookRequest())
    finally:
        await server.stop(0)
    first, second = recorder.seen
    assert first["x-request-id"] == "req-42"
    assert first["traceparent"] == trace
    assert first["x-keel-subject"] == "u-7"
    assert first["x-keel-caller"] == "kitchen.v1.KitchenService"
    # Without an id from the caller, one is created at the edge and follows the request.
    assert second["x-request-id"] == front.correlation_ids[1]
    assert len(second["x-request-id"]) == 32
    assert "traceparent" not in second


async def test_idempotent_method_is_retried_on_unavailable() -> None:
    front = Front()
    front.failures = [keel.errors.Unavailable("restarting"), keel.errors.Unavailable("restarting")]
    server, target = await _front(front)
    try:
        async with kitchen_keel.KitchenServiceClient.connect(target) as client:
            reply = await client.import_(kitchen_pb2.ImportRequest(), timeout=10)
    finally:
        await server.stop(0)
    assert reply.imported == 3
    assert front.attempts == 3


async def test_non_idempotent_method_is_never_retried() -> None:
    front = Front()
    front.failures = [keel.errors.Unavailable("restarting")]
    server, target = await _front(front)
    try:
        async with kitchen_keel.KitchenServiceClient.connect(target) as client:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.cook(kitchen_pb2.CookRequest(), timeout=10)
    finally:
        await server.stop(0)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert front.attempts == 1


async def test_resource_exhausted_is_retried_only_with_retry_info() -> None:
    front = Front()
    front.failures = [keel.errors.ResourceExhausted("slow down", retry_after=0.2)]
    server, target = await _front(front)
    try:
        async with kitchen_keel.KitchenServiceClient.connect(target) as client:
            assert (await client.import_(kitchen_pb2.ImportRequest(), timeout=10)).imported == 2
            front.attempts = 0
            front.failures = [keel.errors.ResourceExhausted("quota gone")]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.import_(kitchen_pb2.ImportRequest(), timeout=10)
    finally:
        await server.stop(0)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert front.attempts == 1


async def test_retries_stop_at_the_attempt_limit() -> None:
    front = Front()
    front.failures = [keel.errors.Unavailable(f"down {i}") for i in range(10)]
    server, target = await _front(front)
    settings = keel.Settings(retry_max_attempts=3)
    try:
        async with kitchen_keel.KitchenServiceClient.connect(target, settings=settings) as client:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.import_(kitchen_pb2.ImportRequest(), timeout=10)
    finally:
        await server.stop(0)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert front.attempts == 3


async def test_circuit_opens_fails_fast_half_opens_and_closes() -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    settings = keel.Settings(breaker_threshold=3, breaker_reset=0.3)
    client = kitchen_keel.KitchenServiceClient.connect(
        target, settings=settings, options=FAST_RECONNECT
    )
    async with client:
        for _ in range(3):  # nothing listens: UNAVAILABLE each time
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.cook(kitchen_pb2.CookRequest(), timeout=2)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await BREAKERS.state(target) == "opened"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.cook(kitchen_pb2.CookRequest(), timeout=2)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details() == f"circuit open for {target}: too many recent failures"

        # After the reset period a failed probe opens the circuit again ...
        await asyncio.sleep(0.35)
        with pytest.raises(grpc.aio.AioRpcError):
            await client.cook(kitchen_pb2.CookRequest(), timeout=2)
        assert await BREAKERS.state(target) == "opened"

        # ... and once the target is back, a successful probe closes it.
        server = keel.Server([Front()], port=port, log_calls=False)
        await server.start()
        try:
            await asyncio.sleep(0.35)
            assert await BREAKERS.state(target) in ("opened", "half-opened")
            reply = await client.cook(kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name="x")))
            assert reply.dish.name == "x"
            assert await BREAKERS.state(target) == "closed"
        finally:
            await server.stop(0)


async def test_application_errors_do_not_open_the_circuit() -> None:
    front = Front()
    front.failures = [keel.errors.NotFound("no") for _ in range(5)]
    server, target = await _front(front)
    settings = keel.Settings(breaker_threshold=2)
    try:
        async with kitchen_keel.KitchenServiceClient.connect(target, settings=settings) as client:
            for _ in range(5):
                with pytest.raises(grpc.aio.AioRpcError):
                    await client.cook(kitchen_pb2.CookRequest())
            assert await BREAKERS.state(target) == "closed"
    finally:
        await server.stop(0)


async def test_connect_without_address_uses_env_target(pantry: tuple[Pantry, str]) -> None:
    recorder, pantry_target = pantry
    settings = keel.Settings(targets={"KITCHEN_V1_PANTRYSERVICE": pantry_target})
    async with kitchen_keel.PantryServiceClient.connect(settings=settings) as client:
        assert (await client.count(kitchen_pb2.CountRequest())).count == 1
    assert len(recorder.seen) == 1


async def test_registry_lists_replicas_balanced_round_robin(tmp_path: Path) -> None:
    fronts = [Front(), Front()]
    started = [await _front(front) for front in fronts]
    registry = tmp_path / "registry.toml"
    addresses = ", ".join(f'"{target}"' for _, target in started)
    registry.write_text(f'[targets]\n"kitchen.v1.KitchenService" = [{addresses}]\n')
    settings = keel.Settings(registry=str(registry))
    try:
        async with kitchen_keel.KitchenServiceClient.connect(settings=settings) as client:
            # Until both replicas' connections are ready, round_robin uses the ready one.
            for _ in range(50):
                if all(front.attempts for front in fronts):
                    break
                await client.cook(kitchen_pb2.CookRequest())
                await asyncio.sleep(0.01)
            for front in fronts:
                front.attempts = 0
            for _ in range(10):
                await client.cook(kitchen_pb2.CookRequest())
    finally:
        for server, _ in started:
            await server.stop(0)
    assert [front.attempts for front in fronts] == [5, 5]


def test_discovery_template_and_errors(tmp_path: Path) -> None:
    from keel.runtime import discovery  # noqa: PLC0415

    registry = tmp_path / "registry.toml"
    registry.write_text('[defaults]\ntemplate = "dns:///{name}.{package}:50051"\n')
    settings = keel.Settings(registry=str(registry))
    assert (
        discovery.resolve("acme.orders.v1.OrderService", settings)
        == "dns:///order-service.acme.orders.v1:50051"
    )
    env = keel.Settings(targets={"ACME_ORDERS_V1_ORDERSERVICE": "10.0.0.1:1,10.0.0.2:1"})
    assert discovery.resolve("acme.orders.v1.OrderService", env) == "ipv4:10.0.0.1:1,10.0.0.2:1"
    registry.write_text("[targets]\n")
    with pytest.raises(ConfigError, match="set KEEL_TARGET_ACME_ORDERS_V1_ORDERSERVICE"):
        discovery.resolve("acme.orders.v1.OrderService", settings)
    registry.write_text("[targets\n")
    with pytest.raises(ConfigError, match=r"registry\.toml"):
        discovery.resolve("acme.orders.v1.OrderService", settings)


async def test_client_metrics(pantry: tuple[Pantry, str]) -> None:
    _, pantry_target = pantry
    labels = {
        "grpc_type": "unary",
        "grpc_service": "kitchen.v1.PantryService",
        "grpc_method": "Count",
        "grpc_code": "OK",
    }
    before = REGISTRY.get_sample_value("grpc_client_handled_total", labels) or 0
    async with kitchen_keel.PantryServiceClient.connect(pantry_target) as client:
        await client.count(kitchen_pb2.CountRequest())
        await client.count(kitchen_pb2.CountRequest())
    assert (REGISTRY.get_sample_value("grpc_client_handled_total", labels) or 0) - before == 2


async def test_default_timeouts_in_order() -> None:
    settings = keel.Settings(default_timeout=7.0)
    client = kitchen_keel.PantryServiceClient(
        grpc.aio.insecure_channel("unused:1"), settings=settings
    )
    spec = kitchen_keel.PANTRY_SERVICE.method("Count")
    assert client._timeout(spec, None) == 7.0
    assert client._timeout(spec, 0.5) == 0.5
    await client.channel.close()
