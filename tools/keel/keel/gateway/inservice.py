"""REST served by the service itself: the gateway's request path, ending in a direct call.

`ServiceRest` is `keel.gateway.Gateway` with its last step replaced: instead of a gRPC call to
an upstream, the matched, admitted request calls the method's behaviour in this process
(keel.gateway.local), built by keel.runtime.handlers exactly as for the gRPC server (verified
caller, validation, errors, metrics, spans). Everything before that step is the gateway's own
code: routes, CORS, auth policy from the protos, rate limits, transcoding, errors, the request
id, the per-request log line, `/openapi.json`, `/docs`, `/asyncapi.json`, `/healthz`, `/readyz`,
`/metrics` (`/openapi.json`, `/asyncapi.json` and `/docs` describe this server's services: its
operations, the channels it publishes or subscribes to). `keel.Server(..., rest_port=...)`
(KEEL_REST_PORT) serves it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from keel.gateway import events_doc
from keel.gateway.app import Gateway, Middleware, wants_events
from keel.gateway.endpoints import Endpoints
from keel.gateway.exchange import Exchange, Receive, Scope
from keel.gateway.local import Behaviour, HttpCallContext, LocalCall, unary
from keel.gateway.outbound import Metadata
from keel.gateway.routes import Match, RouteTable, merge_openapi, read_diagram
from keel.runtime.config import Settings
from keel.runtime.spec import ServiceSpec


def generated_root(implementation: type) -> Path | None:
    """The folder `keel gen` wrote the implementation's generated base into (its import root),
    or None if the base was not loaded from a file."""
    for cls in implementation.__mro__:
        spec = vars(cls).get("__keel_service__")
        if isinstance(spec, ServiceSpec):
            module = sys.modules.get(cls.__module__)
            found = getattr(module, "__file__", None)
            if not found:
                return None
            depth = len(Path(spec.file).parts) - 1  # folders of the proto path
            return Path(found).resolve().parents[depth]
    return None


def service_routes(implementations: Iterable[Any]) -> RouteTable:
    """The routes of the services these implementations serve, with their OpenAPI documents
    and the AsyncAPI document that `keel gen` wrote next to their generated code."""
    specs: list[ServiceSpec] = []
    documents: list[Path] = []
    asyncapi: dict[str, Any] | None = None
    drawn: str | None = None
    for implementation in implementations:
        spec: ServiceSpec = type(implementation).__keel_service__
        specs.append(spec)
        root = generated_root(type(implementation))
        if root is None:
            continue
        document = root / "openapi" / Path(spec.file).with_suffix(".json")
        if document.is_file() and document not in documents:
            documents.append(document)
        events = root / "asyncapi.json"
        if asyncapi is None and events.is_file():
            asyncapi = json.loads(events.read_text())
        drawn = drawn or read_diagram(root)
    return RouteTable(specs, merge_openapi(documents), asyncapi, drawn)


class ServiceRest(Gateway):
    """The REST routes of a server's own services, answered in its process.

    `behaviours` maps each method's gRPC path (`/pkg.Service/Method`) to the behaviour the
    server built for it; `not_serving` lists the services that are not serving (`/readyz`).
    """

    edge_span = False  # the method's own SERVER span continues the request's trace context
    warn_unauthenticated = False  # the server warns that its callers are not verified

    def __init__(
        self,
        routes: RouteTable,
        behaviours: Mapping[str, Behaviour],
        not_serving: Callable[[], Awaitable[list[str]]],
        *,
        settings: Settings | None = None,
        max_body_bytes: int = 1 << 20,
        middleware: Iterable[Middleware] = (),
        metrics: bool = True,
    ) -> None:
        super().__init__(
            routes,
            default_target="in-process",  # never dialled: no upstream call is made
            settings=settings,
            max_body_bytes=max_body_bytes,
            middleware=middleware,
            metrics=metrics,
        )
        self.behaviours = dict(behaviours)
        self._by_method = {
            id(r.method): (self.behaviours[r.method.path], r.method.kind.server_streaming)
            for r in routes.routes
        }
        """Each routed method's behaviour and whether it streams, by the identity of its
        MethodSpec (no key to build per request)."""
        own = [service.name for service in routes.services]
        events = events_doc.for_services(routes.asyncapi, own) if routes.asyncapi else None
        self.endpoints = Endpoints(
            routes.openapi,
            not_serving,
            events,  # its own channels; the diagram shows the whole system's
            title=", ".join(name.rpartition(".")[2] for name in own),
            system=routes.asyncapi,
            own=own,
            diagram=routes.diagram,
        )

    def _upstream(self, service: str) -> tuple[str, str] | None:
        return None  # answered in this process

    def _dispatch(
        self,
        found: Match,
        request: Any,
        timeout: float,
        metadata: Metadata,
        *,
        scope: Scope,
        receive: Receive,
        exchange: Exchange,
    ) -> Awaitable[None]:
        """The method's behaviour called in this process, answering as the gateway does."""
        behaviour, streaming = self._by_method[id(found.route.method)]
        if streaming:
            call = LocalCall(
                behaviour, found, request, timeout, metadata, client=scope.get("client")
            )
            return call.server_stream(exchange, receive, sse=wants_events(scope))
        context = HttpCallContext(metadata, timeout, scope.get("client"))
        return unary(behaviour, found, request, context, exchange)
