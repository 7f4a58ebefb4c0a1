"""The gateway's own endpoints: /healthz, /readyz, /metrics, /openapi.json and /docs."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import prometheus_client

from keel.gateway.docs import DOCS_PAGE
from keel.gateway.exchange import Exchange
from keel.runtime import workers

PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})


class Endpoints:
    """Answers GET/HEAD on PATHS; `not_serving` lists the upstreams that are down."""

    def __init__(
        self, openapi: dict[str, Any], not_serving: Callable[[], Awaitable[list[str]]]
    ) -> None:
        self._openapi = json.dumps(openapi).encode()
        self._not_serving = not_serving

    async def answer(self, path: str, exchange: Exchange) -> None:
        if path == "/healthz":
            await exchange.reply(200, b'{"status":"ok"}')
        elif path == "/openapi.json":
            await exchange.reply(200, self._openapi)
        elif path == "/docs":
            await exchange.reply(200, DOCS_PAGE, [(b"content-type", b"text/html; charset=utf-8")])
        elif path == "/readyz":
            down = await self._not_serving()
            if down:
                payload = json.dumps({"status": "unavailable", "not_serving": down}).encode()
                await exchange.reply(503, payload)
            else:
                await exchange.reply(200, b'{"status":"ready"}')
        else:
            metrics = workers.merged_metrics()
            kind = prometheus_client.CONTENT_TYPE_LATEST.encode()
            await exchange.reply(200, metrics, [(b"content-type", kind)])
