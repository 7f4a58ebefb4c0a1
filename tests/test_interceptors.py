"""Extension points: server and client interceptors, with docs/runtime.md's examples run as
they are written there."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import keel
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from keel.runtime import logs
from keel.runtime import server as server_module

from tests.conftest import REPO
from tests.servers.kitchen_server import Kitchen, Pantry, kitchen_keel, kitchen_pb2

COOK = "/kitchen.v1.KitchenService/Cook"


def doc_example(marker: str) -> dict[str, Any]:
    """Run the one python block of docs/runtime.md that contains `marker`; the names it made."""
    text = (REPO / "docs" / "runtime.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if marker in b]
    assert len(blocks) == 1, f"docs/runtime.md has {len(blocks)} examples with {marker!r}"
    names: dict[str, Any] = {"__name__": "docs_runtime_example"}
    exec(compile(blocks[0], "docs/runtime.md", "exec"), names)
    return names


def _dish(name: str) -> kitchen_pb2.CookRequest:
    return kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name=name))


class Record(grpc.aio.ServerInterceptor):
    """Notes its name in a shared list for every call."""

    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self.seen.append(self.name)
        return await continuation(details)


async def test_server_interceptors_see_every_call_health_included() -> None:
    count_calls = doc_example("class CountCalls")["CountCalls"]()
    async with (
        keel.Server([Kitchen()], port=0, log_calls=False, interceptors=[count_calls]) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        client = kitchen_keel.KitchenServiceClient(channel)
        assert (await client.cook(_dish("soup"))).dish.name == "soup"
        with pytest.raises(keel.errors.InvalidArgument) as caught:  # Keel's handling still runs
            await client.cook(_dish("invalid"))
        health: Any = health_pb2_grpc.HealthStub(channel)  # stubs are typed for sync channels
        await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert caught.value.reason == "NOT_COOKABLE"
    assert dict(count_calls.calls) == {COOK: 2, "/grpc.health.v1.Health/Check": 1}


async def test_server_interceptors_run_in_order() -> None:
    seen: list[str] = []
    chain = [Record("first", seen), Record("second", seen)]
    async with (
        keel.Server([Kitchen()], port=0, log_calls=False, interceptors=chain) as server,
        kitchen_keel.KitchenServiceClient.connect(f"127.0.0.1:{server.port}") as client,
    ):
        await client.cook(_dish("soup"))
    assert seen == ["first", "second"]


async def test_without_interceptors_grpc_builds_the_server_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[dict[str, Any]] = []
    plain = grpc.aio.server

    def recording(**kwargs: Any) -> grpc.aio.Server:
        made.append(kwargs)
        return plain(**kwargs)

    monkeypatch.setattr(grpc.aio, "server", recording)
    async with keel.Server([Kitchen()], port=0, log_calls=False):
        pass
    assert [m["interceptors"] for m in made] == [None]  # grpc's default: no interceptor pipeline


class _StopError(Exception):
    pass


def test_serve_hands_its_interceptors_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    given: list[Any] = []

    class Recording(keel.Server):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            given.extend(kwargs["interceptors"])
            raise _StopError

    monkeypatch.setattr(server_module, "Server", Recording)
    monkeypatch.setattr(logs, "configure", lambda *_, **__: None)
    for name in ("KEEL_PORT", "KEEL_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    interceptor = Record("only", [])
    with pytest.raises(_StopError):
        keel.serve([Kitchen()], port=0, interceptors=[interceptor])
    assert given == [interceptor]


@pytest.fixture
async def pantry() -> AsyncIterator[tuple[Pantry, str]]:
    impl = Pantry()
    async with keel.Server([impl, Kitchen()], port=0, log_calls=False) as server:
        yield impl, f"127.0.0.1:{server.port}"


async def test_client_interceptors_see_every_call(pantry: tuple[Pantry, str]) -> None:
    recorder, target = pantry
    add_tenant = doc_example("class AddTenant")["AddTenant"]
    async with kitchen_keel.PantryServiceClient.connect(
        target, interceptors=[add_tenant()]
    ) as client:
        await client.count(kitchen_pb2.CountRequest(), metadata=[("x-request-id", "req-5")])
    (seen,) = recorder.seen
    assert seen["x-tenant"] == "acme"
    assert seen["x-request-id"] == "req-5"  # Keel's own metadata is still sent
    assert seen["remaining"] is not None  # and its deadline


async def test_errors_through_client_interceptors_are_typed(pantry: tuple[Pantry, str]) -> None:
    _, target = pantry
    add_tenant = doc_example("class AddTenant")["AddTenant"]
    async with kitchen_keel.KitchenServiceClient.connect(
        target, interceptors=[add_tenant()]
    ) as client:
        with pytest.raises(keel.errors.InvalidArgument) as caught:
            await client.cook(_dish("invalid"))
    assert caught.value.reason == "NOT_COOKABLE"
    assert [v.field for v in caught.value.field_violations] == ["dish.name"]
