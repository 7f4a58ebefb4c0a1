"""`keel ingress`: Kubernetes Gateway API `HTTPRoute`s generated from the protos' HTTP rules.

Where services serve REST themselves (KEEL_REST_PORT), an ingress can send each request
straight to the service whose proto declares its route, with no Python hop in front: one
`HTTPRoute` per proto service, a match per `google.api.http` binding (its verb, HEAD beside
GET, and its path: `Exact` for a template without variables, else an anchored
`RegularExpression` in RE2 syntax, which Envoy-based controllers match; regular expressions are
an extended feature of the Gateway API that not every controller has), all to that service's
Kubernetes `Service` on its REST port. Methods without an HTTP rule get no route: they stay
gRPC only, as with the gateway.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from keel.gateway.routes import Route, RouteTable
from keel.httprule import DeepWildcard, Template, Wildcard
from keel.runtime import discovery

MAX_MATCHES = 64  # Gateway API v1: matches per rule
MAX_ROUTE_MATCHES = 128  # Gateway API v1: matches across a route's rules (at most 16 rules)
MAX_NAME = 253  # a Kubernetes object name: a DNS subdomain
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
    cors: bool = False
    """Also route each path's OPTIONS (CORS preflights, answered by the service)."""


class IngressError(ValueError):
    """The options cannot make valid routes; the message says why."""


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
    return f"^{pattern}$"


def _path_match(route: Route) -> dict[str, str]:
    flat = route.template.flat()
    literal = not route.template.verb and all(
        variable is None and not isinstance(segment, Wildcard | DeepWildcard)
        for segment, variable in flat
    )
    if literal:
        return {"type": "Exact", "value": route.rule.path}
    return {"type": "RegularExpression", "value": path_regex(route.template)}


def _matches(route: Route) -> list[dict[str, Any]]:
    """The route's match, and a HEAD one beside a GET (the services answer HEAD on GET routes)."""
    path = _path_match(route)
    if route.verb not in _VERBS:  # a custom HTTP method: any method on the path
        return [{"path": path}]
    verbs = [route.verb, "HEAD"] if route.verb == "GET" else [route.verb]
    return [{"path": path, "method": verb} for verb in verbs]


def _name(service: str) -> str:
    """A valid object name (DNS subdomain) for a service's route, unique per service."""
    name = re.sub(r"[^a-z0-9.-]+", "-", service.lower()).strip(".-")
    if len(name) <= MAX_NAME - 3:  # room for a part number
        return name
    digest = hashlib.sha256(service.encode()).hexdigest()[:10]
    return f"{name[: MAX_NAME - 14].rstrip('.-')}-{digest}"


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _backend(options: Options, service: str) -> str:
    try:
        name = options.backend.format(**discovery.template_fields(service))
    except (KeyError, IndexError, ValueError) as error:
        raise IngressError(
            f"--backend {options.backend!r}: use {{name}} (order-service) and {{package}} "
            f"(acme.orders.v1) only ({error!r})"
        ) from None
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise IngressError(f"--backend gives {name!r} for {service}: not a Service name")
    return name


def http_routes(table: RouteTable, options: Options | None = None) -> list[dict[str, Any]]:
    """One `HTTPRoute` per proto service with HTTP rules (more if it has more matches than one
    route holds), most specific routes first, as the gateway tries them."""
    options = options or Options()
    if not 0 < options.port < 65536:
        raise IngressError(f"--port {options.port}: choose one from 1 to 65535")
    by_service: dict[str, list[Route]] = {}
    for route in table.routes:  # (sorted most specific first)
        by_service.setdefault(route.method.service, []).append(route)
    documents = []
    for service, routes in sorted(by_service.items()):
        refs = [{"name": _backend(options, service), "port": options.port}]
        matches = [match for route in routes for match in _matches(route)]
        if options.cors:
            paths = {json.dumps(m["path"], sort_keys=True): m["path"] for m in matches}
            matches += [{"path": path, "method": "OPTIONS"} for path in paths.values()]
        parts = list(_chunks(matches, MAX_ROUTE_MATCHES))
        for number, part in enumerate(parts, start=1):
            rules = [
                {"matches": list(chunk), "backendRefs": refs}
                for chunk in _chunks(part, MAX_MATCHES)
            ]
            name = _name(service) + (f"-{number}" if len(parts) > 1 else "")
            metadata: dict[str, Any] = {
                "name": name,
                "annotations": {"keel.dev/service": service},
            }
            if options.namespace:
                metadata["namespace"] = options.namespace
            spec: dict[str, Any] = {"parentRefs": [{"name": options.gateway}]}
            if options.hostnames:
                spec["hostnames"] = list(options.hostnames)
            spec["rules"] = rules
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
    return header + yaml.dump_all(
        documents, Dumper=_PlainDumper, sort_keys=False, explicit_start=True
    )


class _PlainDumper(yaml.SafeDumper):
    """YAML without anchors and aliases (a shared path or backend is written out each time)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
