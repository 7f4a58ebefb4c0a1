"""The mock's admin HTTP API (JSON), an ASGI app:

GET    /calls[?method=M]   the calls received (oldest first)
DELETE /calls              forget them
GET    /stubs              the stubs, with how often each was used
POST   /stubs              add stubs: one, a list, or {"stubs": [...]}; answers their ids
DELETE /stubs[?id=I...]    remove these stubs (none named: all)
POST   /events/<name>      publish the event (a JSON body) to KEEL_NATS_URL
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from keel.mock.state import MockState
from keel.mock.stubs import StubError, parse

Publish = Callable[[str, Any], Awaitable[str]]


class Admin:
    """The admin API over one mock's state; `publish(name, body)` emits events (optional)."""

    def __init__(self, state: MockState, publish: Publish | None = None) -> None:
        self.state = state
        self.publish = publish

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = parse_qs(scope.get("query_string", b"").decode())
        status, answer = await self.handle(scope["method"], scope["path"], query, body)
        data = json.dumps(answer).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def handle(
        self, verb: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, Any]:
        """(HTTP status, JSON answer) of one request."""
        path = path.rstrip("/")
        if path == "/calls" and verb == "GET":
            method = query.get("method", [None])[0]
            return 200, {"calls": [c.to_json() for c in self.state.calls(method)]}
        if path == "/calls" and verb == "DELETE":
            self.state.clear_calls()
            return 200, {}
        if path == "/stubs" and verb == "GET":
            return 200, {"stubs": [s.to_json() for s in self.state.stubs]}
        if path == "/stubs" and verb == "POST":
            try:
                added = self.state.add(parse(json.loads(body or b"null"), "POST /stubs"))
            except (ValueError, StubError) as error:
                return 400, {"error": str(error)}
            return 200, {"ids": [s.id for s in added]}
        if path == "/stubs" and verb == "DELETE":
            return 200, {"removed": self.state.remove(query.get("id", []))}
        if path.startswith("/events/") and verb == "POST":
            return await self._event(path.removeprefix("/events/"), body)
        return 404, {"error": f"no {verb} {path}"}

    async def _event(self, name: str, body: bytes) -> tuple[int, Any]:
        if self.publish is None:
            return 503, {"error": "no broker: set KEEL_NATS_URL"}
        try:
            event_id = await self.publish(name, json.loads(body or b"{}"))
        except LookupError as error:
            return 404, {"error": str(error.args[0] if error.args else error)}
        except ValueError as error:
            return 400, {"error": str(error)}
        except Exception as error:  # the broker: unreachable, timed out, refused
            return 502, {"error": f"publishing failed: {error!r}"}
        return 200, {"id": event_id}
