"""`keel ingress`: Kubernetes Gateway API `HTTPRoute`s generated from the protos' HTTP rules.

Where services serve REST themselves (KEEL_REST_PORT), an ingress can send each request
straight to the service whose proto declares its route, with no Python hop in front: one
`HTTPRoute` per proto service, a match per `google.api.http` binding (its verb, and its path:
`Exact` for a template without variables, else a `RegularExpression` in RE2 syntax, the subset
Envoy and the other controllers accept), all to that service's Kubernetes `Service` on its REST
port. Methods without an HTTP rule get no route: they stay gRPC only, as with the gateway.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from keel.gateway.routes import Route, RouteTable
from keel.httprule import DeepWildcard, Template, Wildcard
from keel.naming import snake_case

MAX_RULES = 16  # Gateway API v1: rules per HTTPRoute
MAX_MATCHES = 64  # Gateway API v1: matches per rule
_VERBS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


@dataclass(frozen=True)
class Options:
    """Where the routes attach and what they point at.

    `backend` names a proto service's Kubernetes Service, as discovery's `[defaults] template`
    does: `{name}` is the service's short name in kebab case (`order-service`), `{package}` its
    proto package (`acme.orders.v1`)."""

    gateway: str = "keel"
    namespace: str | None = None
    backend: str = "{name}"
    port: int = 8080
    hostnames: tuple[str, ...] = ()


def path_regex(template: Template) -> str:
    """An RE2 regular expression for the paths `template` matches (no lookaround, no captures)."""
    flat = template.flat()
    pattern = ""
    for index, (segment, _) in enumerate(flat):
        if isinstance(segment, DeepWildcard):
            pattern += "(?:/[^/]*)+" if index == 0 else "(?:/[^/]*)*"
        elif isinstance(segment, Wildcard):
            pattern += "/[^/]+"
        else:
            pattern += "/" + re.escape(segment.value)
    if template.verb:
        pattern += re.escape(":" + template.verb)
    return pattern


def _path_match(route: Route) -> dict[str, str]:
    flat = route.template.flat()
    literal = not route.template.verb and all(
        variable is None and not isinstance(segment, Wildcard | DeepWildcard)
        for segment, variable in flat
    )
    if literal:
        return {"type": "Exact", "value": route.rule.path}
    return {"type": "RegularExpression", "value": path_regex(route.template)}


def _match(route: Route) -> dict[str, Any]:
    match: dict[str, Any] = {"path": _path_match(route)}
    if route.verb in _VERBS:
        match["method"] = route.verb
    return match


def _dns_label(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].rstrip("-")


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def http_routes(table: RouteTable, options: Options | None = None) -> list[dict[str, Any]]:
    """One `HTTPRoute` per proto service with HTTP rules (more if it has more matches than one
    route holds), most specific routes first, as the gateway tries them."""
    options = options or Options()
    by_service: dict[str, list[Route]] = {}
    for route in table.routes:  # (sorted most specific first)
        by_service.setdefault(route.method.service, []).append(route)
    documents = []
    for service, routes in sorted(by_service.items()):
        package, _, short = service.rpartition(".")
        backend = options.backend.format(name=snake_case(short).replace("_", "-"), package=package)
        matches = [_match(route) for route in routes]
        rules = [
            {"matches": list(chunk), "backendRefs": [{"name": backend, "port": options.port}]}
            for chunk in _chunks(matches, MAX_MATCHES)
        ]
        for part, chunk in enumerate(_chunks(rules, MAX_RULES)):
            name = _dns_label(service) + (f"-{part + 1}" if part else "")
            metadata: dict[str, Any] = {"name": name, "labels": {"keel.dev/service": service}}
            if options.namespace:
                metadata["namespace"] = options.namespace
            spec: dict[str, Any] = {"parentRefs": [{"name": options.gateway}]}
            if options.hostnames:
                spec["hostnames"] = list(options.hostnames)
            spec["rules"] = list(chunk)
            documents.append(
                {
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "HTTPRoute",
                    "metadata": metadata,
                    "spec": spec,
                }
            )
    return documents


def render(documents: list[dict[str, Any]]) -> str:
    """The routes as one YAML stream (`kubectl apply -f -`)."""
    header = "# Generated by `keel ingress` from the protos' google.api.http rules: do not edit.\n"
    return header + yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)
