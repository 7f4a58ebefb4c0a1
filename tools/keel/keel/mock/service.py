"""A mock implementation of a generated `<Service>Base`: every method answers a matching
stub's answer, else valid fake data, and records the call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from keel.errors import Internal
from keel.mock import fake
from keel.mock.state import Call, MockState, metadata_json, now
from keel.mock.stubs import Answer
from keel.runtime.context import Context
from keel.runtime.service import ServiceBase
from keel.runtime.spec import MethodSpec

STREAM_LENGTH = 3
"""How many messages a server-streaming method sends without a stub."""


def implementation(base: type[ServiceBase], state: MockState) -> ServiceBase:
    """An instance of a subclass of `base` whose every method is mocked."""
    spec = base.__keel_service__
    methods = {m.python_name: _method(m, state) for m in spec.methods}
    mocked: type[ServiceBase] = type(f"Mock{base.__name__}", (base,), methods)
    return mocked()


def _method(spec: MethodSpec[Any, Any], state: MockState) -> Callable[..., Any]:
    responder = Responder(spec, state)
    if spec.kind.server_streaming:

        async def streaming(
            self: ServiceBase, request: Any, context: Context
        ) -> AsyncIterator[Any]:
            requests = await _requests(spec, request)
            async for message in responder.stream(requests, context):
                yield message

        return streaming

    async def unary(self: ServiceBase, request: Any, context: Context) -> Any:
        return await responder.unary(await _requests(spec, request), context)

    return unary


async def _requests(spec: MethodSpec[Any, Any], request: Any) -> list[Message]:
    if spec.kind.client_streaming:
        return [each async for each in request]
    return [request]


class Responder:
    """The answers of one method."""

    def __init__(self, spec: MethodSpec[Any, Any], state: MockState) -> None:
        self.spec = spec
        self.state = state
        self.path = f"{spec.service}/{spec.name}"

    def _receive(self, requests: list[Message], context: Context) -> Answer | None:
        shown = [
            json_format.MessageToDict(
                r, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            for r in requests
        ]
        request = shown if self.spec.kind.client_streaming else shown[0]
        metadata = metadata_json(context.metadata)
        stub = self.state.find(self.path, request, metadata)
        call = Call(self.path, request, metadata, now(), stub.id if stub else "")
        self.state.record(call)
        return stub.take() if stub is not None else None

    def _fake(self, requests: list[Message], index: int = 0) -> Message:
        data = b"".join(r.SerializeToString(deterministic=True) for r in requests)
        rng = fake.rng_for(self.state.seed, f"{self.path}#{index}", data)
        try:
            return fake.fake(self.spec.response_type, rng)
        except (fake.FakeDataError, ValueError) as error:  # (ValueError: a pattern not sampled)
            raise Internal(f"keel mock: {error}") from None

    def _parsed(self, message: Any) -> Message:
        parsed: Message = json_format.ParseDict(dict(message), self.spec.response_type())
        return parsed

    async def unary(self, requests: list[Message], context: Context) -> Message:
        if self.state.forward is not None:
            return (await self._forwarded(requests, context))[0]
        answer = self._receive(requests, context)
        if answer is None:
            return self._fake(requests)
        await asyncio.sleep(answer.delay)
        failure = answer.failure()
        if failure is not None:
            raise failure
        if answer.respond is None and answer.stream:
            return self._parsed(answer.stream[0])
        return self._parsed(answer.respond or {})

    async def _forwarded(self, requests: list[Message], context: Context) -> list[Message]:
        assert self.state.forward is not None
        self._receive(requests, context)
        return await self.state.forward(self.spec, requests, context.metadata)

    async def stream(self, requests: list[Message], context: Context) -> AsyncIterator[Message]:
        if self.state.forward is not None:
            for answered in await self._forwarded(requests, context):
                yield answered
            return
        answer = self._receive(requests, context)
        if answer is None:
            for index in range(STREAM_LENGTH):
                yield self._fake(requests, index)
            return
        await asyncio.sleep(answer.delay)
        messages = answer.stream if answer.stream is not None else ()
        if answer.respond is not None:
            messages = (answer.respond,)
        for message in messages:
            yield self._parsed(message)
        failure = answer.failure()
        if failure is not None:
            raise failure
