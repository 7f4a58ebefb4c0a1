"""The gateway's route table: every `google.api.http` binding found in generated code.

Routes come only from the `MethodSpec.http` rules generated from the protos; methods without
`google.api.http` have no route and cannot be reached from outside. Templates are parsed and
compiled once; a request path either matches a route (FULL), matches with another HTTP method
(the 405 case, with `Allow`), or matches nothing (404).
"""

from __future__ import annotations

import difflib
import importlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote

from google.protobuf.descriptor import FieldDescriptor

from keel import genroot
from keel.gateway import flat
from keel.httprule import Literal, Matcher, Template, parse
from keel.runtime.spec import HttpRule, MethodSpec, ServiceSpec


@dataclass(frozen=True)
class Route:
    verb: str
    template: Template
    matcher: Matcher
    rule: HttpRule
    method: MethodSpec[Any, Any]
    strings_only: bool = False
    """No body, and every path variable is a top-level string field: built by keywords."""
    http_body: bool | None = None
    """Whether the answer (the response, or its `response_body` field) is a google.api.HttpBody
    (None: not known, looked up per response)."""
    flat_answer: bool = False
    """Whether the answer is the whole response and a flat message (keel.gateway.flat)."""

    @property
    def specificity(self) -> tuple[int, int, int]:
        """More literal segments, then longer templates, then a custom verb win."""
        flat = self.template.flat()
        literals = sum(isinstance(s, Literal) for s, v in flat if v is None)
        return (literals, len(flat), 1 if self.template.verb else 0)


class Match(NamedTuple):
    """A route that matched a request, with its path variables (field path → value).

    A named tuple, not a frozen dataclass: one is made per request, and a frozen dataclass's
    `__init__` sets each field through `object.__setattr__`."""

    route: Route
    variables: dict[str, str]


HTTP_BODY = "google.api.HttpBody"


class RouteTable:
    """Routes by specificity; `find(verb, path)` → Match, a set of allowed verbs, or None."""

    def __init__(
        self,
        services: Iterable[ServiceSpec],
        openapi: dict[str, Any] | None = None,
        asyncapi: dict[str, Any] | None = None,
        diagram: str | None = None,
    ) -> None:
        routes = []
        self.services = tuple(services)
        self.openapi = openapi or {"openapi": "3.1.0", "info": {"title": "Keel", "version": "v1"}}
        self.asyncapi = asyncapi
        """The AsyncAPI document of the events `keel gen` wrote (`asyncapi.json`), if any."""
        self.diagram = diagram
        """The system's diagram (Mermaid) `make gen` wrote with `keel graph` (`system.mmd`)."""
        for service in self.services:
            for method in service.methods:
                for rule in method.http:
                    template = parse(rule.path)
                    matcher = Matcher(template)
                    simple = not rule.body and _top_level_strings(template, method)
                    raw = _answers_http_body(rule, method)
                    whole = not rule.response_body
                    plain = whole and flat.is_flat(method.response_type.DESCRIPTOR)
                    routes.append(
                        Route(rule.method, template, matcher, rule, method, simple, raw, plain)
                    )
        self.routes = sorted(routes, key=lambda r: r.specificity, reverse=True)
        # Routes whose first segment is a literal are only tried for paths that start with it.
        keys = [_first_literal(r) for r in self.routes]
        self._unkeyed = [r for r, k in zip(self.routes, keys, strict=True) if k is None]
        self._by_first: dict[str, list[Route]] = {
            key: [r for r, k in zip(self.routes, keys, strict=True) if k in (key, None)]
            for key in {k for k in keys if k is not None}
        }

    def find(self, verb: str, path: str) -> Match | set[str] | None:
        try:
            first = path.split("/", 2)[1]  # (the path starts with "/")
        except IndexError:  # no "/" at all (`OPTIONS *`)
            first = path
        if "%" in first:
            first = unquote(first)
        if ":" in first:
            first = first.split(":", 1)[0]
        candidates = self._by_first.get(first, self._unkeyed)
        allowed: set[str] | None = None  # (made only for a 405: most requests match)
        for route in candidates:
            variables = route.matcher.match(path)
            if variables is None:
                continue
            if route.verb == verb or (verb == "HEAD" and route.verb == "GET"):
                # (tuple.__new__: a named tuple's own __new__ is a Python call more)
                return tuple.__new__(Match, (route, variables))
            if allowed is None:
                allowed = set()
            allowed.add(route.verb)
        return allowed

    def custom_methods(self, path: str) -> list[str]:
        """For a path that names a custom method no route has (`/v1/products/p_mug:restok`),
        the routes of the custom methods its resource has (`POST /v1/products/p_mug:restock`):
        the closest by name if any is close, else all of them (none for another path)."""
        stem, colon, said = path.rpartition(":")
        if not colon or not said or "/" in said:
            return []
        found: dict[str, list[str]] = {}
        for route in self.routes:
            custom = route.template.verb
            if custom and custom != said and route.matcher.match(f"{stem}:{custom}") is not None:
                found.setdefault(custom, []).append(f"{route.verb} {stem}:{custom}")
        if not found:
            return []
        close = difflib.get_close_matches(said, found, n=len(found), cutoff=0.6)
        return [each for custom in close or sorted(found) for each in found[custom]]

    @classmethod
    def from_generated(cls, gen: Path) -> RouteTable:
        """Every service declared by the `*_keel.py` modules under `gen` (an import root),
        with every message type of the `*_pb2.py` modules known (for error details).

        `gen` is made importable whatever its package names (`keel.genroot`: a generated
        `test/` folder is merged into the standard library's `test`); a file that can never be
        imported (under a folder named as a module, such as `types/`) raises
        `genroot.UnimportableError` naming it, before anything is imported.
        """
        generated = [p.relative_to(gen).as_posix() for p in sorted(gen.rglob("*.py"))]
        blocked = genroot.unimportable(gen, generated)
        if blocked:
            raise genroot.UnimportableError(blocked)
        # Every message module too: a service may put any generated type in error details.
        modules = [name for name in generated if name.endswith(("_keel.py", "_pb2.py"))]
        genroot.install(gen.resolve())
        services = []
        for name in modules:
            module = importlib.import_module(name.removesuffix(".py").replace("/", "."))
            services += [v for v in vars(module).values() if isinstance(v, ServiceSpec)]
        events = gen / "asyncapi.json"
        asyncapi = json.loads(events.read_text()) if events.is_file() else None
        openapi = merge_openapi(sorted((gen / "openapi").rglob("*.json")))
        return cls(services, openapi, asyncapi, read_diagram(gen))


def read_diagram(root: Path) -> str | None:
    """The system diagram `make gen` wrote next to the generated code (`system.mmd`), if any."""
    found = root / "system.mmd"
    return found.read_text() if found.is_file() else None


def _top_level_strings(template: Template, method: MethodSpec[Any, Any]) -> bool:
    fields = method.request_type.DESCRIPTOR.fields_by_name
    for variable in template.variables:
        field = fields.get(variable.field_path[0]) if len(variable.field_path) == 1 else None
        if field is None or field.type != FieldDescriptor.TYPE_STRING or field.is_repeated:
            return False
    return True


def _answers_http_body(rule: HttpRule, method: MethodSpec[Any, Any]) -> bool:
    descriptor = method.response_type.DESCRIPTOR
    if rule.response_body:
        field = descriptor.fields_by_name.get(rule.response_body)
        if field is None or field.is_repeated or field.message_type is None:
            return False
        descriptor = field.message_type
    return bool(descriptor.full_name == HTTP_BODY)


def _first_literal(route: Route) -> str | None:
    segment = route.template.segments[0] if route.template.segments else None
    return segment.value if isinstance(segment, Literal) else None


def merge_openapi(documents: Iterable[Path]) -> dict[str, Any]:
    """One OpenAPI 3.1 document from the per-file ones `keel gen` wrote."""
    merged: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Keel REST gateway", "version": "v1"},
        "paths": {},
        "components": {"schemas": {}, "securitySchemes": {}},
    }
    for document in documents:
        data = json.loads(document.read_text())
        for path, operations in data.get("paths", {}).items():
            merged["paths"].setdefault(path, {}).update(operations)
        for section in ("schemas", "securitySchemes"):
            merged["components"][section].update(data.get("components", {}).get(section, {}))
    return merged
