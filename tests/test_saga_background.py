"""Sagas driven in the background for a call (real gRPC servers): in the call's trace and with
its correlation id, but not bound by its deadline, cancellation or identity; retried until they
end; stopped cleanly at shutdown and resumed afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import keel
import keel.saga
import pytest
from keel.data import Database
from keel.runtime import propagation
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.servers.kitchen_server import Pantry, kitchen_keel, kitchen_pb2
from tests.test_saga_flow import Peer, three_steps

SETTINGS = keel.Settings(saga_backoff=(0.0, 0.0), saga_lease=30.0)


@pytest.fixture
async def db(keel_database_url: str) -> AsyncIterator[Database]:
    database = Database(keel_database_url, tables=keel.saga.tables.metadata)
    yield database
    await database.dispose()


class Starter(kitchen_keel.KitchenServiceBase):  # type: ignore[misc]
    """Cook starts a saga in the background: a held step, then a call to the pantry."""

    def __init__(self, db: Database, pantry_target: str) -> None:
        self.pantry_target = pantry_target
        self.release = asyncio.Event()
        self.held = asyncio.Event()
        self.held_ids: list[str] = []
        self.saga = keel.saga.Saga("cook", self._body, db, settings=SETTINGS)
        self.in_steps: list[tuple[str, int, str, float | None]] = []
        """Per step: its name, the trace id, the correlation id and the deadline left."""

    async def cook(self, request: Any, context: keel.Context) -> Any:
        state = await self.saga.start({"hold": request.dish.servings > 0}, background=True)
        return kitchen_pb2.CookResponse(dish=kitchen_pb2.Dish(name=state.id))

    def _note(self, name: str) -> None:
        from opentelemetry import trace  # noqa: PLC0415

        trace_id = trace.get_current_span().get_span_context().trace_id
        self.in_steps.append(
            (name, trace_id, propagation.correlation_id(), propagation.remaining())
        )

    async def _hold(self, step: keel.saga.Step) -> None:
        self._note(step.name)
        self.held_ids.append(step.saga_id)
        self.held.set()
        await self.release.wait()

    async def _count(self, step: keel.saga.Step) -> int:
        self._note(step.name)
        async with kitchen_keel.PantryServiceClient.connect(self.pantry_target) as pantry:
            reply = await pantry.count(kitchen_pb2.CountRequest(), metadata=step.metadata)
        return int(reply.count)

    async def _body(self, run: keel.saga.Run[dict[str, Any]]) -> None:
        if run.data["hold"]:
            await run.step("hold", self._hold)
        await run.step("count", self._count)


async def test_a_background_saga_is_in_the_calls_trace_but_not_its_identity(
    db: Database, spans: InMemorySpanExporter
) -> None:
    pantry = Pantry()
    async with keel.Server([pantry], port=0, log_calls=False) as pantry_server:
        starter = Starter(db, f"127.0.0.1:{pantry_server.port}")
        async with (
            keel.Server([starter], port=0, log_calls=False) as front,
            kitchen_keel.KitchenServiceClient.connect(f"127.0.0.1:{front.port}") as client,
        ):
            reply = await client.cook(
                kitchen_pb2.CookRequest(),
                timeout=3,
                metadata=[("x-request-id", "corr-7"), ("x-keel-subject", "alice")],
            )
            state = await starter.saga.wait(reply.dish.name)
    assert state.status == keel.saga.COMPLETED
    finished = spans.get_finished_spans()
    by_role = {(s.name, s.kind): s for s in finished}
    caller = by_role["kitchen.v1.KitchenService/Cook", SpanKind.CLIENT]
    served = by_role["kitchen.v1.PantryService/Count", SpanKind.SERVER]
    step = by_role["saga cook count", SpanKind.INTERNAL]
    assert step.context.trace_id == caller.context.trace_id
    assert served.context.trace_id == caller.context.trace_id
    assert step.attributes is not None
    assert step.attributes["keel.saga.id"] == reply.dish.name
    ((name, trace_id, correlation, remaining),) = starter.in_steps
    assert (name, trace_id, correlation, remaining) == (
        "count",
        caller.context.trace_id,
        "corr-7",
        None,
    )
    (seen,) = pantry.seen
    assert seen["x-request-id"] == "corr-7"
    assert seen["idempotency-key"] == f"{reply.dish.name}/count"
    assert "x-keel-subject" not in seen  # the saga is the service's own work, not alice's
    assert seen["x-keel-caller"] == "kitchen.v1.KitchenService"  # ... the calling service's
    assert (
        seen["remaining"] > 5
    )  # the client's default (10 s), not what was left of the call's (3 s)


async def test_the_calls_deadline_passing_does_not_stop_its_saga(db: Database) -> None:
    pantry = Pantry()
    async with keel.Server([pantry], port=0, log_calls=False) as pantry_server:
        starter = Starter(db, f"127.0.0.1:{pantry_server.port}")
        async with (
            keel.Server([starter], port=0, log_calls=False) as front,
            kitchen_keel.KitchenServiceClient.connect(f"127.0.0.1:{front.port}") as client,
        ):
            request = kitchen_pb2.CookRequest(dish=kitchen_pb2.Dish(name="soup", servings=1))
            with pytest.raises(keel.errors.KeelError) as failed:
                await client.cook(request, timeout=0.5)
            assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.wait_for(starter.held.wait(), 10)
            (saga_id,) = starter.held_ids
            assert starter.saga.driving(saga_id)  # still driven, the call long gone
            starter.release.set()
            state = await starter.saga.wait(saga_id)
    assert state.status == keel.saga.COMPLETED
    assert [s.name for s in state.steps] == ["hold", "count"]
    assert len(pantry.seen) == 1


async def test_a_saga_launched_and_stopped_at_shutdown_resumes_afterwards(db: Database) -> None:
    peer = Peer()
    peer.hold["b"] = asyncio.Event()
    saga = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    recovery = keel.saga.Recovery(saga)
    await recovery.start()
    launched = await saga.launch({}, saga_id="bg1")
    assert (launched.status, launched.steps) == (keel.saga.RUNNING, ())
    await asyncio.wait_for(peer.entered.wait(), 10)
    await recovery.stop()  # the shutdown: the saga's background driving stops with it
    assert not saga.driving("bg1")
    stopped = await keel.saga.show(db, "bg1")
    assert stopped is not None
    assert stopped.status == keel.saga.RUNNING
    assert stopped.lease_until is None  # released: the next process takes it at once
    assert [(s.name, s.status) for s in stopped.steps] == [("a", "DONE"), ("b", "STARTED")]

    del peer.hold["b"]
    restarted = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    again = keel.saga.Recovery(restarted)
    await again.start()
    try:
        await asyncio.wait_for(again.idle(), 10)
    finally:
        await again.stop()
    state = await keel.saga.show(db, "bg1")
    assert state is not None
    assert state.status == keel.saga.COMPLETED
    assert peer.calls == [("a", "bg1/a"), ("b", "bg1/b"), ("b", "bg1/b"), ("c", "bg1/c")]


async def test_a_background_saga_is_retried_until_it_ends(db: Database) -> None:
    peer = Peer()
    peer.failures["c"] = [keel.errors.NotFound("gone")]
    peer.failures["undo:a"] = [keel.errors.Internal("bug")] * 5  # two attempts, then done
    saga = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    first = await saga.start({}, saga_id="bg2", background=True)
    assert first.status == keel.saga.COMPENSATING  # the first attempt's outcome
    assert first.error == "c: NotFound: gone"
    state = await asyncio.wait_for(saga.wait("bg2"), 10)
    assert state.status == keel.saga.COMPENSATED
    assert [label for label, _ in peer.calls].count("undo:a") == 6
    assert [label for label, _ in peer.calls].count("undo:b") == 1


async def test_a_background_start_waits_for_the_first_attempt_not_for_its_caller(
    db: Database,
) -> None:
    peer = Peer()
    peer.hold["b"] = asyncio.Event()
    saga = keel.saga.Saga("three", three_steps(peer), db, settings=SETTINGS)
    caller = asyncio.create_task(saga.start({}, saga_id="bg3", background=True))
    await asyncio.wait_for(peer.entered.wait(), 10)
    caller.cancel()  # the caller goes away
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert saga.driving("bg3")
    peer.hold["b"].set()
    state = await asyncio.wait_for(saga.wait("bg3"), 10)
    assert state.status == keel.saga.COMPLETED
    assert [label for label, _ in peer.calls] == ["a", "b", "c"]
