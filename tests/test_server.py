"""keel.Server and keel.serve: health, reflection, errors with details, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import grpc.aio
import keel
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from keel.runtime.listen import ListenError
from structlog.testing import capture_logs

from tests.conftest import REPO, free_port, start_kitchen_server
from tests.servers.kitchen_server import Kitchen, kitchen_keel, kitchen_pb2

SERVICE = "kitchen.v1.KitchenService"


def _dish(name: str, seconds: float = 0) -> kitchen_pb2.CookRequest:
    cook_time = duration_pb2.Duration()
    cook_time.FromTimedelta(timedelta(seconds=seconds))
    return kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name=name, cook_time=cook_time))


def _status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The google.rpc.Status in an aio error's trailers (grpc_status is typed for sync calls)."""
    status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
    return status


@pytest.fixture
async def server() -> AsyncIterator[keel.Server]:
    async with keel.Server([Kitchen(), kitchen_keel.PantryServiceBase()], port=0) as running:
        yield running


@pytest.fixture
async def channel(server: keel.Server) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as open_channel:
        yield open_channel


async def test_health_per_service(channel: grpc.aio.Channel) -> None:
    health: Any = health_pb2_grpc.HealthStub(channel)  # stubs are typed for sync channels
    for name in ("", SERVICE, "kitchen.v1.PantryService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="no.Such"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_and_describes(channel: grpc.aio.Channel) -> None:
    stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]

    async def ask(request: reflection_pb2.ServerReflectionRequest) -> Any:
        async for reply in stub.ServerReflectionInfo(iter([request])):
            return reply
        raise AssertionError("no reflection reply")

    listed = await ask(reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE, "kitchen.v1.PantryService", "grpc.health.v1.Health"} <= names
    described = await ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE))
    assert described.file_descriptor_response.file_descriptor_proto


async def test_error_details_reach_the_caller(channel: grpc.aio.Channel) -> None:
    client = kitchen_keel.KitchenServiceClient(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.cook(_dish("invalid"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = _status(caught.value)
    assert status is not None
    assert status.message == "the dish is not cookable"
    bad_request = error_details_pb2.BadRequest()
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(bad_request)
    assert status.details[1].Unpack(info)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("dish.name", "must not be 'invalid'")
    ]
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "NOT_COOKABLE",
        "kitchen.example",
        {"dish": "invalid"},
    )


async def test_retry_info_detail(channel: grpc.aio.Channel) -> None:
    client = kitchen_keel.KitchenServiceClient(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.cook(_dish("busy"))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = _status(caught.value)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert retry.retry_delay.ToTimedelta() == timedelta(seconds=1.5)


async def test_unexpected_exception_is_internal_with_correlation_id(
    channel: grpc.aio.Channel,
) -> None:
    client = kitchen_keel.KitchenServiceClient(channel)
    with capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.cook(_dish("explode"), metadata=[("x-request-id", "req-123")])
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error (correlation id req-123)"
    assert "secret-internal-detail" not in str(caught.value.debug_error_string())
    (entry,) = [e for e in logs if e["event"] == "unhandled exception in handler"]
    assert entry["method"] == f"/{SERVICE}/Cook"
    assert "secret-internal-detail" in str(entry["exc_info"])


async def test_generated_correlation_id_when_caller_sends_none(channel: grpc.aio.Channel) -> None:
    client = kitchen_keel.KitchenServiceClient(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.cook(_dish("explode"))
    details = caught.value.details() or ""
    assert details.startswith("internal error (correlation id ")
    assert len(details.removeprefix("internal error (correlation id ").rstrip(")")) == 32


@pytest.mark.parametrize("payload", [b"\xff\xff\xff", b"\x0a\x05ab"], ids=["garbage", "truncated"])
async def test_undecodable_request_is_invalid_argument(
    channel: grpc.aio.Channel, payload: bytes
) -> None:
    raw: Any = channel.unary_unary(f"/{SERVICE}/Cook")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(payload)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request is not a valid kitchen.v1.CookRequest message" in (caught.value.details() or "")


async def test_undecodable_message_in_a_client_stream(channel: grpc.aio.Channel) -> None:
    raw: Any = channel.stream_unary(f"/{SERVICE}/Stock")
    good = kitchen_pb2.StockRequest(quantity=1).SerializeToString()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(iter([good, b"\xff\xff"]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_stop_drains_in_flight_calls() -> None:
    server = keel.Server([Kitchen()], port=0)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        client = kitchen_keel.KitchenServiceClient(channel)
        health: Any = health_pb2_grpc.HealthStub(channel)  # stubs are typed for sync channels
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        assert (await anext(aiter(watch))).status == health_pb2.HealthCheckResponse.SERVING
        calls = [asyncio.ensure_future(client.cook(_dish(f"d{i}", 0.5))) for i in range(5)]
        for _ in range(250):  # until all five are being handled
            if Kitchen.in_flight == 5:
                break
            await asyncio.sleep(0.01)
        assert Kitchen.in_flight == 5
        stopping = asyncio.ensure_future(server.stop(grace=5))
        draining = await anext(aiter(watch))
        assert draining.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        await asyncio.sleep(0.05)
        with pytest.raises(grpc.aio.AioRpcError):
            await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        replies = await asyncio.gather(*calls)
        await stopping
    assert sorted(r.dish.name for r in replies) == [f"d{i}" for i in range(5)]


def test_one_service_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="each service may be served once"):
        keel.Server([Kitchen(), Kitchen()])


async def test_sigterm_lets_a_burst_of_slow_calls_finish() -> None:
    process, port = start_kitchen_server({"KEEL_GRACE_PERIOD": "10"})
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = kitchen_keel.KitchenServiceClient(channel)
            calls = [asyncio.ensure_future(client.cook(_dish(f"d{i}", 1.0))) for i in range(20)]
            for _ in range(200):  # until the server is handling all twenty
                probe = await client.cook(_dish("in-flight"))
                if probe.dish.servings == 20:
                    break
                await asyncio.sleep(0.02)
            assert probe.dish.servings == 20
            process.send_signal(signal.SIGTERM)
            replies = await asyncio.gather(*calls)
        assert len(replies) == 20
        out, _ = process.communicate(timeout=15)
    finally:
        process.kill()
    assert process.returncode == 0
    entries = [json.loads(line) for line in out.splitlines()]
    events = [e["event"] for e in entries]
    assert events[-1] == "stopped"
    slow = [i for i, e in enumerate(entries) if e["event"] == "rpc" and e["duration_ms"] >= 900]
    calls = [entries[i] for i in slow]
    assert len(calls) == 20
    # Every slow call was still in flight when the drain began, and all ended OK.
    assert events.index("draining") < min(slow)
    assert {(c["service"], c["method"], c["code"]) for c in calls} == {(SERVICE, "Cook", "OK")}
    assert all(len(c["correlation_id"]) == 32 for c in calls)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KEEL_PROT": "1"}, "unknown setting KEEL_PROT"),
        ({"KEEL_PORT": "70000"}, "KEEL_PORT='70000': must be a port number"),
        ({"KEEL_PORT": "abc"}, "KEEL_PORT='abc': is not a valid value"),
        ({"KEEL_GRACE_PERIOD": "-1"}, "KEEL_GRACE_PERIOD='-1': must be a number of seconds"),
        ({"KEEL_LOG_LEVEL": "loud"}, "KEEL_LOG_LEVEL='loud': must be one of"),
        ({"KEEL_OTLP_ENDPOINT": "collector"}, "KEEL_OTLP_ENDPOINT='collector': must be host:port"),
        ({"KEEL_TRACE_SAMPLE_RATIO": "2"}, "KEEL_TRACE_SAMPLE_RATIO='2': must be a number from 0"),
        ({"KEEL_TRACE_RATE_LIMIT": "-5"}, "KEEL_TRACE_RATE_LIMIT='-5': must be new traces per"),
        ({"KEEL_EDGE_TIMEOUT": "0"}, "KEEL_EDGE_TIMEOUT='0': must be"),
    ],
)
def test_bad_settings_stop_start_up_with_a_clear_message(env: dict[str, str], message: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    result = subprocess.run(
        [sys.executable, "tests/servers/kitchen_server.py"],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr


async def test_a_port_in_use_is_an_error_not_shared() -> None:
    # grpc would share it (SO_REUSEPORT): the kernel would split the calls between the two.
    async with keel.Server([Kitchen()], port=0, log_calls=False) as first:
        second = keel.Server([Kitchen()], port=first.port, log_calls=False)
        with pytest.raises(ListenError, match=rf"cannot listen on 127.0.0.1:{first.port} for gRPC"):
            await second.start()
        taken = keel.Server([Kitchen()], port=0, rest_port=first.port, log_calls=False)
        with pytest.raises(ListenError, match=rf":{first.port} for REST \(KEEL_REST_PORT\)"):
            await taken.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING  # the first serves on


@pytest.mark.parametrize(
    ("env", "what"),
    [
        ({}, "gRPC"),
        ({"KEEL_WORKERS": "2", "KEEL_REST_PORT": "{free}"}, "gRPC"),
        ({"KEEL_REST_PORT": "{taken}", "KEEL_PORT": "{free}"}, "REST (KEEL_REST_PORT)"),
        ({"KEEL_METRICS_PORT": "{taken}", "KEEL_PORT": "{free}"}, "metrics (KEEL_METRICS_PORT)"),
        (
            {
                "KEEL_WORKERS": "2",
                "KEEL_METRICS_PORT": "{taken}",
                "KEEL_PORT": "{free}",
                "KEEL_REST_PORT": "{free2}",
            },
            "metrics (KEEL_METRICS_PORT)",
        ),
    ],
)
def test_keel_serve_on_a_port_in_use_exits_1_naming_it(env: dict[str, str], what: str) -> None:
    with socket.socket() as holder:  # another process's listener, as far as keel.serve knows
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        ports = {"taken": str(taken), "free": str(free_port()), "free2": str(free_port())}
        clean = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        settings = {"KEEL_PORT": str(taken), **{k: v.format(**ports) for k, v in env.items()}}
        result = subprocess.run(
            [sys.executable, "tests/servers/kitchen_server.py"],
            cwd=REPO,
            env={**clean, "KEEL_HOST": "127.0.0.1", "KEEL_METRICS_PORT": "0", **settings},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1, result.stderr
    assert f"keel: cannot listen on 127.0.0.1:{taken} for {what}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_settings_defaults_and_values() -> None:
    assert keel.Settings.from_env({}) == keel.Settings()
    settings = keel.Settings.from_env(
        {
            "KEEL_PORT": "8080",
            "KEEL_GRACE_PERIOD": "2.5",
            "KEEL_OTLP_ENDPOINT": "otel:4317",
            "PATH": "/x",
        }
    )
    assert (settings.port, settings.grace_period, settings.otlp_endpoint) == (
        8080,
        2.5,
        "otel:4317",
    )


async def test_requests_are_validated_before_the_handler(channel: grpc.aio.Channel) -> None:
    client = kitchen_keel.KitchenServiceClient(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.cook(kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name="")))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = _status(caught.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [(v.field, v.reason) for v in bad_request.field_violations] == [
        ("dish.name", "string.min_len")
    ]
    assert status.message == "invalid kitchen.v1.CookRequest: dish.name: " + (
        bad_request.field_violations[0].description
    )


async def test_every_broken_rule_is_one_field_violation() -> None:
    from acme.orders.v1 import orders_keel, orders_pb2  # noqa: PLC0415 (gen/ is on pythonpath)

    handled: list[Any] = []

    class Orders(orders_keel.OrderServiceBase):
        async def create_order(
            self, request: orders_pb2.CreateOrderRequest, context: keel.Context
        ) -> orders_pb2.CreateOrderResponse:
            handled.append(request)
            return orders_pb2.CreateOrderResponse()

    async with (
        keel.Server([Orders()], port=0) as server,
        orders_keel.OrderServiceClient.connect(f"127.0.0.1:{server.port}") as client,
    ):
        bad = orders_pb2.CreateOrderRequest(
            lines=[
                orders_pb2.OrderLine(product_id="p1", quantity=1),
                orders_pb2.OrderLine(product_id="", quantity=5000),
            ]
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.create_order(bad)
        good = orders_pb2.CreateOrderRequest(
            customer_id="c1",
            lines=[orders_pb2.OrderLine(product_id="p1", quantity=2)],
            payment_method_token="tok",
        )
        await client.create_order(good)
    status = _status(caught.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert sorted((v.field, v.reason) for v in bad_request.field_violations) == [
        ("customer_id", "string.min_len"),
        ("lines[1].product_id", "string.min_len"),
        ("lines[1].quantity", "int32.gt_lte"),
        ("payment_method_token", "string.min_len"),
    ]
    assert handled == [good]  # the handler never saw the invalid request


async def test_invalid_message_in_a_client_stream(channel: grpc.aio.Channel) -> None:
    client = kitchen_keel.KitchenServiceClient(channel)

    async def items() -> AsyncIterator[kitchen_pb2.StockRequest]:
        yield kitchen_pb2.StockRequest(quantity=1)
        yield kitchen_pb2.StockRequest(quantity=0)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stock(items())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "quantity" in (caught.value.details() or "")


async def test_validation_can_be_turned_off() -> None:
    async with (
        keel.Server([Kitchen()], port=0, validate=False) as server,
        kitchen_keel.KitchenServiceClient.connect(f"127.0.0.1:{server.port}") as client,
    ):
        reply = await client.cook(kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name="")))
    assert reply.dish.name == ""


async def test_services_close_hook_runs_on_stop() -> None:
    closed: list[str] = []

    class Closing(Kitchen):
        async def __keel_close__(self) -> None:
            closed.append("kitchen")

    async with keel.Server([Closing()], port=0):
        assert closed == []
    assert closed == ["kitchen"]


async def test_background_work_stops_before_the_services_close() -> None:
    """A relay, consumer or saga recovery may still use a service's clients and database: it
    stops first, then the services close them."""
    order: list[str] = []

    class Closing(Kitchen):
        async def __keel_close__(self) -> None:
            order.append("service closed")

    class Work:
        async def start(self) -> None:
            order.append("work started")

        async def stop(self) -> None:
            order.append("work stopped")

    async with keel.Server([Closing()], port=0, background=[Work()]):
        assert order == ["work started"]
    assert order == ["work started", "work stopped", "service closed"]
