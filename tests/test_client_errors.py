"""Typed errors for callers: a generated client raises the `keel.errors` class of the status,
with the google.rpc details parsed into attributes, and stays a grpc.aio.AioRpcError."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import keel
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from keel.errors import FieldViolation
from keel.runtime import propagation
from prometheus_client import REGISTRY

from tests.conftest import REPO, free_port
from tests.servers.kitchen_server import kitchen_keel, kitchen_pb2

HELP = error_details_pb2.Help(links=[error_details_pb2.Help.Link(url="https://acme.example/help")])


def _status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The google.rpc.Status in an aio error's trailers (grpc_status is typed for sync calls)."""
    status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
    return status


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class Pantry(kitchen_keel.PantryServiceBase):  # type: ignore[misc]
    """Count raises the error a test gives it."""

    def __init__(self) -> None:
        self.error: Exception | None = None

    async def count(self, request: Any, context: keel.Context) -> Any:
        if self.error is not None:
            raise self.error
        return kitchen_pb2.CountResponse(count=1)


class Front(kitchen_keel.KitchenServiceBase):  # type: ignore[misc]
    """Cook calls the pantry: catches NotFound and re-raises it, lets anything else escape.
    Follow streams one step, then fails with the error a test gives it."""

    def __init__(self, pantry_target: str = "") -> None:
        self.pantry_target = pantry_target
        self.caught: list[keel.errors.KeelError] = []
        self.stream_error: Exception = keel.errors.NotFound("no such dish")

    async def cook(self, request: Any, context: keel.Context) -> Any:
        async with kitchen_keel.PantryServiceClient.connect(self.pantry_target) as pantry:
            try:
                await pantry.count(kitchen_pb2.CountRequest())
            except keel.errors.NotFound as error:
                self.caught.append(error)
                raise
        return kitchen_pb2.CookResponse(dish=request.dish)

    async def follow(self, request: Any, context: keel.Context) -> AsyncIterator[Any]:
        if request.steps:
            yield kitchen_pb2.FollowResponse(step=kitchen_pb2.Dish.Step(text="chop"))
        raise self.stream_error


@pytest.fixture
async def pantry() -> AsyncIterator[tuple[Pantry, str]]:
    impl = Pantry()
    async with keel.Server([impl], port=0, log_calls=False) as server:
        yield impl, f"127.0.0.1:{server.port}"


@pytest.fixture
async def front(pantry: tuple[Pantry, str]) -> AsyncIterator[tuple[Front, str]]:
    impl = Front(pantry[1])
    async with keel.Server([impl], port=0, log_calls=False) as server:
        yield impl, f"127.0.0.1:{server.port}"


async def _count_fails(pantry: tuple[Pantry, str], error: Exception) -> keel.errors.KeelError:
    """What a client of the pantry catches when Count raises `error`."""
    impl, target = pantry
    impl.error = error
    async with kitchen_keel.PantryServiceClient.connect(target) as client:
        with pytest.raises(keel.errors.KeelError) as caught:
            await client.count(kitchen_pb2.CountRequest())
    return caught.value


async def test_bad_request_becomes_field_violations(pantry: tuple[Pantry, str]) -> None:
    violations = {"dish.name": "must not be empty", "lines[1].quantity": "must be > 0"}
    error = await _count_fails(
        pantry, keel.errors.InvalidArgument("bad", field_violations=violations)
    )
    assert type(error) is keel.errors.InvalidArgument
    assert error.field_violations == [
        FieldViolation("dish.name", "must not be empty"),
        FieldViolation("lines[1].quantity", "must be > 0"),
    ]
    # Still everything a grpc.aio error offers, details trailer included.
    assert isinstance(error, grpc.aio.AioRpcError)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "bad")
    status = _status(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == list(violations)


async def test_error_info_becomes_reason_domain_metadata(pantry: tuple[Pantry, str]) -> None:
    raised = keel.errors.FailedPrecondition(
        "pantry closed", reason="CLOSED", domain="pantry.example", metadata={"until": "9:00"}
    )
    error = await _count_fails(pantry, raised)
    assert type(error) is keel.errors.FailedPrecondition
    assert (error.reason, error.domain, error.metadata) == (
        "CLOSED",
        "pantry.example",
        {"until": "9:00"},
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_retry_info_becomes_retry_after(pantry: tuple[Pantry, str]) -> None:
    error = await _count_fails(pantry, keel.errors.ResourceExhausted("slow", retry_after=1.5))
    assert type(error) is keel.errors.ResourceExhausted
    assert error.retry_after == 1.5
    assert (error.field_violations, error.reason, error.other_details) == ([], "", [])


async def test_other_details_are_kept(pantry: tuple[Pantry, str]) -> None:
    error = await _count_fails(pantry, keel.errors.Aborted("x", other_details=[_packed(HELP)]))
    (detail,) = error.other_details
    found = error_details_pb2.Help()
    assert detail.Unpack(found)
    assert found == HELP


async def test_status_without_details_is_typed_too(pantry: tuple[Pantry, str]) -> None:
    error = await _count_fails(pantry, RuntimeError("boom"))
    assert type(error) is keel.errors.Internal
    assert error.details().startswith("internal error (correlation id ")


@pytest.mark.parametrize("escape", [False, True], ids=["re-raised", "not-caught"])
async def test_a_caught_error_travels_on_through_the_chain(
    pantry: tuple[Pantry, str], front: tuple[Front, str], escape: bool
) -> None:
    pantry_impl, _ = pantry
    front_impl, front_target = front
    raised: keel.errors.KeelError = keel.errors.NotFound(
        "no flour",
        reason="INGREDIENT_MISSING",
        domain="pantry.example",
        metadata={"ingredient": "flour"},
        other_details=[_packed(HELP)],
    )
    if escape:  # Front catches only NotFound
        raised = keel.errors.Unavailable("pantry restarting", retry_after=0.5)
    pantry_impl.error = raised
    async with kitchen_keel.KitchenServiceClient.connect(front_target) as client:
        with pytest.raises(keel.errors.KeelError) as caught:
            await client.cook(kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name="bread")))
    error = caught.value
    assert type(error) is type(raised)
    assert (error.code(), error.details()) == (type(raised).code, raised.message)
    assert _status(error) == raised.to_status()
    assert (error.reason, error.metadata, error.retry_after) == (
        raised.reason,
        raised.metadata,
        raised.retry_after,
    )
    if not escape:
        (seen,) = front_impl.caught
        assert (seen.reason, seen.domain) == ("INGREDIENT_MISSING", "pantry.example")


async def test_server_streaming_raises_typed_errors(front: tuple[Front, str]) -> None:
    impl, target = front
    received: list[str] = []

    async def follow(client: Any, request: Any) -> None:
        async for reply in client.follow(request):
            received.append(reply.step.text)

    async with kitchen_keel.KitchenServiceClient.connect(target) as client:
        with pytest.raises(keel.errors.NotFound) as caught:
            await follow(client, kitchen_pb2.FollowRequest(steps=1))
        assert received == ["chop"]
        assert caught.value.details() == "no such dish"
        impl.stream_error = keel.errors.InvalidArgument("no", field_violations={"steps": "odd"})
        with pytest.raises(keel.errors.InvalidArgument) as before_any:
            await follow(client, kitchen_pb2.FollowRequest())
    assert before_any.value.field_violations == [FieldViolation("steps", "odd")]


class _Passed:
    """A handler's call context whose deadline has passed."""

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return []

    def time_remaining(self) -> float:
        return -1.0


async def test_a_deadline_that_passed_raises_deadline_exceeded(pantry: tuple[Pantry, str]) -> None:
    async def while_handling() -> None:  # a task: the bound call ends with it
        propagation.bind("kitchen.v1.KitchenService", _Passed())
        async with kitchen_keel.PantryServiceClient.connect(pantry[1]) as client:
            await client.count(kitchen_pb2.CountRequest())

    with pytest.raises(keel.errors.DeadlineExceeded) as caught:
        await asyncio.create_task(while_handling())
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert isinstance(caught.value, grpc.aio.AioRpcError)


async def test_unreachable_target_and_open_circuit_are_unavailable() -> None:
    target = f"127.0.0.1:{free_port()}"
    settings = keel.Settings(breaker_threshold=1, breaker_reset=60)
    async with kitchen_keel.PantryServiceClient.connect(target, settings=settings) as client:
        with pytest.raises(keel.errors.Unavailable) as unreachable:
            await client.count(kitchen_pb2.CountRequest(), timeout=5)
        with pytest.raises(keel.errors.Unavailable) as circuit_open:
            await client.count(kitchen_pb2.CountRequest(), timeout=5)
    assert unreachable.value.debug_error_string()
    assert circuit_open.value.details() == f"circuit open for {target}: too many recent failures"


class _AnyService(keel.ClientBase):
    """A client that is no generated class: what the REST gateway calls `_unary` through."""


async def test_unary_and_stream_serve_any_method_spec(
    pantry: tuple[Pantry, str], front: tuple[Front, str]
) -> None:
    front_impl, _ = front
    async with (
        keel.Server([pantry[0], front_impl], port=0, log_calls=False) as both,
        _AnyService(
            grpc.aio.insecure_channel(f"127.0.0.1:{both.port}"), _owns_channel=True
        ) as any_client,
    ):
        count = kitchen_keel.PANTRY_SERVICE.method("Count")
        # A method of the same name in another service is another method.
        elsewhere = type(count)(
            name="Count",
            python_name="count",
            service="kitchen.v1.KitchenService",
            kind=count.kind,
            request_type=count.request_type,
            response_type=count.response_type,
        )
        labels = {"grpc_service": "kitchen.v1.PantryService", "grpc_method": "Count"}
        before = REGISTRY.get_sample_value(
            "grpc_client_handled_total", {"grpc_type": "unary", "grpc_code": "OK", **labels}
        )
        reply = await any_client._unary(count, kitchen_pb2.CountRequest(), 5.0, [("x-a", "1")])
        assert reply.count == 1
        after = REGISTRY.get_sample_value(
            "grpc_client_handled_total", {"grpc_type": "unary", "grpc_code": "OK", **labels}
        )
        assert (after or 0) - (before or 0) == 1
        with pytest.raises(keel.errors.Unimplemented):
            await any_client._unary(elsewhere, kitchen_pb2.CountRequest(), None, None)
        follow = kitchen_keel.KITCHEN_SERVICE.method("Follow")
        with pytest.raises(keel.errors.NotFound):
            async for _ in any_client._stream(follow, kitchen_pb2.FollowRequest(), 5.0, []):
                pass


def _failed(code: grpc.StatusCode, message: str, trailers: Any) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, message)


def test_details_that_cannot_be_read_are_ignored() -> None:
    other = keel.errors.NotFound("elsewhere", reason="R").to_status().SerializeToString()
    for trailers in (
        None,
        grpc.aio.Metadata(("grpc-status-details-bin", b"\xff\xff")),
        grpc.aio.Metadata(("grpc-status-details-bin", other)),  # another code's status
    ):
        error = keel.errors.from_rpc_error(_failed(grpc.StatusCode.ABORTED, "x", trailers))
        assert type(error) is keel.errors.Aborted
        assert (error.reason, error.field_violations, error.other_details) == ("", [], [])


def test_status_code_on_the_class_and_on_errors() -> None:
    assert keel.errors.NotFound.code is grpc.StatusCode.NOT_FOUND
    assert keel.errors.NotFound("x").code() is grpc.StatusCode.NOT_FOUND

    class OutOfFlour(keel.errors.FailedPrecondition):
        pass

    class Teapot(keel.errors.KeelError):
        code = grpc.StatusCode.UNAVAILABLE  # type: ignore[assignment]  # plain codes work too

    assert OutOfFlour("x").code() is grpc.StatusCode.FAILED_PRECONDITION
    teapot: keel.errors.KeelError = Teapot("x")
    assert teapot.code() is grpc.StatusCode.UNAVAILABLE
    assert Teapot.code is grpc.StatusCode.UNAVAILABLE
    error = keel.errors.NotFound("gone", reason="GONE", retry_after=2.0)
    assert str(error) == "gone"
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.details(), copy.reason, copy.retry_after) == (
        keel.errors.NotFound,
        "gone",
        "GONE",
        2.0,
    )
    assert rpc_status.from_call(error) == error.to_status()  # type: ignore[arg-type]


def test_the_testing_docs_example_runs_as_written(tmp_path: Path) -> None:
    """docs/testing.md's example is a test module: run it with pytest."""
    text = (REPO / "docs" / "testing.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    example = tmp_path / "test_docs_example.py"
    example.write_text(block)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            *("-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO), str(example)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_a_stored_status_becomes_the_error_that_made_it() -> None:
    raised = keel.errors.InvalidArgument(
        "quantity: must be positive",
        field_violations=[FieldViolation("lines[0].quantity", "must be positive")],
        reason="BAD_LINE",
        domain="shop",
        metadata={"line": "0"},
    )
    again = keel.errors.from_status(
        status_pb2.Status.FromString(raised.to_status().SerializeToString())
    )
    assert type(again) is keel.errors.InvalidArgument
    assert again.message == raised.message
    assert again.field_violations == raised.field_violations
    assert (again.reason, again.domain, again.metadata) == ("BAD_LINE", "shop", {"line": "0"})
    odd = keel.errors.from_status(status_pb2.Status(code=99, message="?"))
    assert type(odd) is keel.errors.Unknown
