"""The conformance HttpRuleService as a real process serving REST itself, for pass-through tests.

`python tests/servers/mirror_server.py GEN` serves it with `keel.serve` (settings from KEEL_*,
KEEL_REST_PORT for its REST port); GEN is `keel gen` output of tests/conformance/proto. Each
unary method answers with the request as it arrived and the metadata it brought (`seen`); Stream
sends `count` messages, or with name "hold" one message and then waits until the client goes
away, printing "stream cancelled" when it does.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

sys.path.insert(0, sys.argv[1])

import keel
from conformance.v1 import http_keel  # type: ignore[import-not-found]


def _answer(name: str, request: Any, context: keel.Context) -> Any:
    reply = type(request)()
    reply.CopyFrom(request)
    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    reply.seen.update({**metadata, "rpc": name})
    reply.deadline_seconds = context.time_remaining() or 0.0
    return reply


def _unary(name: str) -> Callable[..., Any]:
    async def method(self: Any, request: Any, context: keel.Context) -> Any:
        if request.name == "slow":
            await asyncio.sleep(request.count)  # the deadline ends it first
        return _answer(name, request, context)

    return method


async def _stream(self: Any, request: Any, context: keel.Context) -> AsyncIterator[Any]:
    if request.name == "hold":
        yield _answer("stream", request, context)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            print("stream cancelled", flush=True)
            raise
    for n in range(request.count):
        reply = _answer("stream", request, context)
        reply.count = n
        yield reply


def mirror() -> keel.ServiceBase:
    base = http_keel.HttpRuleServiceBase
    names = [n for n in vars(base) if not n.startswith("_") and callable(getattr(base, n))]
    methods: dict[str, Any] = {n: _unary(n) for n in names if n != "stream"}
    service: keel.ServiceBase = type("Mirror", (base,), {**methods, "stream": _stream})()
    return service


if __name__ == "__main__":
    keel.serve([mirror()])
