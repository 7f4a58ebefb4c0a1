"""The gateway's own endpoints: /healthz, /readyz, /metrics, /openapi.json, /asyncapi.json
and /docs."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import prometheus_client

from keel.gateway.docs import DOCS_PAGE
from keel.gateway.exchange import Exchange
from keel.runtime import workers

PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/asyncapi.json", "/docs"})
NO_EVENTS: dict[str, Any] = {
    "asyncapi": "3.0.0",
    "info": {"title": "Events", "version": "v1"},
    "channels": {},
    "operations": {},
}
"""/asyncapi.json when `keel gen` wrote no AsyncAPI document (no events declared)."""

# /docs: after the REST operations, the events of /asyncapi.json (subject, message, services).
_EVENTS = b"""<h1>Events</h1>
<p>From <a href="/asyncapi.json">/asyncapi.json</a> (AsyncAPI 3.0), generated from the protos.</p>
<div id="events">Loading...</div>
<script>
fetch('/asyncapi.json').then(r => r.json()).then(doc => {
  const root = document.getElementById('events'); root.textContent = '';
  const ops = Object.values(doc.operations || {});
  const messages = (doc.components || {}).messages || {};
  for (const [id, channel] of Object.entries(doc.channels || {})) {
    const names = Object.values(channel.messages || {}).map(m => m.$ref.split('/').pop());
    const by = action => ops
      .filter(o => o.action === action && o.channel.$ref === '#/channels/' + id)
      .map(o => o['x-keel-service']).join(', ') || 'none';
    const d = document.createElement('details'); d.className = 'op';
    const s = document.createElement('summary');
    const c = document.createElement('code'); c.textContent = channel.address;
    const t = document.createElement('span');
    t.textContent = ` ${names.join(', ')}: published by ${by('send')}; `
      + `received by ${by('receive')}`;
    s.append(c, t);
    const p = document.createElement('pre');
    p.textContent = JSON.stringify(names.map(n => messages[n]), null, 2);
    d.append(s, p); root.appendChild(d);
  }
  if (!root.childElementCount) root.textContent = 'No events declared.';
});
</script>"""
_DOCS = DOCS_PAGE.replace(b"</body>", _EVENTS + b"</body>", 1)


class Endpoints:
    """Answers GET/HEAD on PATHS; `not_serving` lists the upstreams that are down."""

    def __init__(
        self,
        openapi: dict[str, Any],
        not_serving: Callable[[], Awaitable[list[str]]],
        asyncapi: dict[str, Any] | None = None,
    ) -> None:
        self._openapi = json.dumps(openapi).encode()
        self._asyncapi = json.dumps(asyncapi or NO_EVENTS).encode()
        self._not_serving = not_serving

    async def answer(self, path: str, exchange: Exchange) -> None:
        if path == "/healthz":
            await exchange.reply(200, b'{"status":"ok"}')
        elif path == "/openapi.json":
            await exchange.reply(200, self._openapi)
        elif path == "/asyncapi.json":
            await exchange.reply(200, self._asyncapi)
        elif path == "/docs":
            await exchange.reply(200, _DOCS, [(b"content-type", b"text/html; charset=utf-8")])
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
