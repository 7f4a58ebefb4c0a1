"""The gateway's own endpoints: /healthz, /readyz, /metrics, /openapi.json, /asyncapi.json,
/docs and the docs page's browser files below /docs (keel.gateway.assets)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import prometheus_client

from keel.gateway import assets
from keel.gateway import diagram as diagrams
from keel.gateway.docs import page
from keel.gateway.exchange import Exchange
from keel.runtime import workers

PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/asyncapi.json", "/docs", *assets.ASSETS}
)
NO_EVENTS: dict[str, Any] = {
    "asyncapi": "3.0.0",
    "info": {"title": "Events", "version": "v1"},
    "channels": {},
    "operations": {},
}
"""/asyncapi.json when `keel gen` wrote no AsyncAPI document (no events declared)."""

_PAGE_HEADERS = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-cache")]


class Endpoints:
    """Answers GET/HEAD on PATHS; `not_serving` lists the upstreams that are down.

    `/docs` is titled `title`; its System tab draws `services` (full names), the services both
    documents name and the events of `system` (the whole system's AsyncAPI document; `asyncapi`
    unless given), with `own` (the services of the process serving it) in bold; or `diagram`,
    `keel graph`'s (gen/system.mmd: the calls between services too), when there is one.
    """

    def __init__(
        self,
        openapi: dict[str, Any],
        not_serving: Callable[[], Awaitable[list[str]]],
        asyncapi: dict[str, Any] | None = None,
        *,
        title: str = "Keel gateway",
        services: Sequence[str] = (),
        system: dict[str, Any] | None = None,
        own: Sequence[str] = (),
        diagram: str | None = None,
    ) -> None:
        # Relative to where it is served, so that "Try it out" keeps a path prefix (a proxy
        # serving the gateway under /api/) instead of calling the host's root.
        served = openapi if "servers" in openapi else {**openapi, "servers": [{"url": "."}]}
        self._openapi = json.dumps(served).encode()
        self._asyncapi = json.dumps(asyncapi or NO_EVENTS).encode()
        self._not_serving = not_serving
        if diagram is not None:  # `keel graph`'s, calls included (gen/system.mmd)
            source, drawn_from = diagrams.outlined(diagram, own), "graph"
        else:
            whole = system if system is not None else asyncapi
            names = diagrams.services(openapi, whole, [*own, *services])
            source, drawn_from = diagrams.mermaid(names, whole, own), "documents"
        self._page = page(title, source, ", ".join(own), drawn_from)

    async def answer(self, path: str, exchange: Exchange, headers: Mapping[str, str]) -> None:
        """Answer `path` (one of PATHS); `headers`: the request's, lower-cased."""
        if path == "/healthz":
            await exchange.reply(200, b'{"status":"ok"}')
        elif path == "/openapi.json":
            await exchange.reply(200, self._openapi)
        elif path == "/asyncapi.json":
            await exchange.reply(200, self._asyncapi)
        elif path == "/docs":
            await exchange.reply(200, self._page, list(_PAGE_HEADERS))
        elif path == "/readyz":
            down = await self._not_serving()
            if down:
                payload = json.dumps({"status": "unavailable", "not_serving": down}).encode()
                await exchange.reply(503, payload)
            else:
                await exchange.reply(200, b'{"status":"ready"}')
        elif path in assets.ASSETS:
            kind = assets.ASSETS[path].content_type
            sent = [
                (b"content-type", kind),
                (b"cache-control", assets.CACHE_FOREVER),
                (b"vary", b"accept-encoding"),
            ]
            if assets.accepts_gzip(headers.get("accept-encoding", "")):
                sent.append((b"content-encoding", b"gzip"))
                await exchange.reply(200, await assets.gzipped(path), sent)
            else:
                await exchange.reply(200, assets.content(path), sent)
        else:
            metrics = workers.merged_metrics()
            kind = prometheus_client.CONTENT_TYPE_LATEST.encode()
            await exchange.reply(200, metrics, [(b"content-type", kind)])
