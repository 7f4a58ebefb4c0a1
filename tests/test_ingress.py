"""`keel ingress`, as docs/gateway.md shows it: Gateway API HTTPRoutes from this repository's
generated code, one per proto service with HTTP rules, each binding a match that sends exactly
its requests (verb and path) to the right service's REST port, and nothing for methods without
an HTTP rule. Paths are matched here with Python's `re` on RE2-safe expressions."""

from __future__ import annotations

import re
import shlex
import subprocess
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from keel.gateway.ingress import Options, http_routes
from keel.gateway.routes import Route, RouteTable
from keel.httprule import DeepWildcard, Matcher, Template, Wildcard, parse

from tests.conftest import BIN, REPO

_PAGE = (REPO / "docs/gateway.md").read_text()
_COMMAND = next(line for line in _PAGE.splitlines() if line.startswith("keel ingress ")).split("|")[
    0
]


def _sample(template: Template, deep: str = "a/b") -> str:
    parts = []
    for segment, _ in template.flat():
        if isinstance(segment, DeepWildcard):
            parts.append(deep)
        elif isinstance(segment, Wildcard):
            parts.append("p_mug")
        else:
            parts.append(segment.value)
    return "/" + "/".join(parts) + (f":{template.verb}" if template.verb else "")


def _hits(match: dict[str, Any], verb: str, path: str) -> bool:
    if match.get("method", verb) != verb:
        return False
    rule = match["path"]
    if rule["type"] == "Exact":
        return bool(rule["value"] == path)
    return re.fullmatch(rule["value"], path) is not None


@pytest.fixture(scope="module")
def routes() -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(BIN / "keel"), *shlex.split(_COMMAND)[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_one_route_per_proto_service_with_http_rules(routes: list[dict[str, Any]]) -> None:
    table = RouteTable.from_generated(REPO / "gen")
    with_rules = {route.method.service for route in table.routes}
    assert {r["metadata"]["annotations"]["keel.dev/service"] for r in routes} == with_rules
    for route in routes:
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert route["kind"] == "HTTPRoute"
        assert route["metadata"]["namespace"] == "shop"
        assert route["spec"]["parentRefs"] == [{"name": "keel"}]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", route["metadata"]["name"])
        assert len(route["metadata"]["name"]) <= 253


def test_each_binding_reaches_its_service_and_only_it(routes: list[dict[str, Any]]) -> None:
    table = RouteTable.from_generated(REPO / "gen")
    assert table.routes
    for route in table.routes:
        path = _sample(route.template)
        short = route.method.service.rsplit(".", 1)[1]
        backend = re.sub(r"(?<!^)(?=[A-Z])", "-", short).lower()  # OrderService → order-service
        reached = {
            ref["name"]
            for doc in routes
            for rule in doc["spec"]["rules"]
            if any(_hits(match, route.verb, path) for match in rule["matches"])
            for ref in rule["backendRefs"]
        }
        assert reached == {backend}, (route.verb, path)
        if route.verb == "GET":  # HEAD too, as the service answers it
            assert any(
                _hits(match, "HEAD", path)
                for doc in routes
                for rule in doc["spec"]["rules"]
                for match in rule["matches"]
            ), path
        assert not any(
            _hits(match, route.verb, path + "/extra/segment")
            for doc in routes
            for rule in doc["spec"]["rules"]
            for match in rule["matches"]
            if not any(isinstance(s, DeepWildcard) for s, _ in route.template.flat())
        ), path


def test_methods_without_an_http_rule_get_no_route(routes: list[dict[str, Any]]) -> None:
    matches = [m for doc in routes for rule in doc["spec"]["rules"] for m in rule["matches"]]
    table = RouteTable.from_generated(REPO / "gen")
    assert len(matches) == sum(2 if r.verb == "GET" else 1 for r in table.routes)  # + HEAD
    assert not any(_hits(m, "POST", "/acme.orders.v1.OrderService/MarkShipped") for m in matches)
    assert not any(_hits(m, "POST", "/v1/orders/o_1:ship") for m in matches)


def test_expressions_are_re2_safe(routes: list[dict[str, Any]]) -> None:
    for doc in routes:
        for rule in doc["spec"]["rules"]:
            assert len(rule["matches"]) <= 64
            for match in rule["matches"]:
                value = match["path"]["value"]
                assert not re.search(r"\(\?[=!<]|\\[1-9]", value), value  # no lookaround, backrefs
                if match["path"]["type"] == "RegularExpression":
                    assert value[0] + value[-1] == "^$", value
            assert rule["backendRefs"][0]["port"] == 8080
        assert len(doc["spec"]["rules"]) <= 16


@pytest.mark.parametrize(
    ("template", "matched", "unmatched"),
    [
        (
            "/v1/{name=files/**}:download",
            ["/v1/files/a/b:download", "/v1/files:download"],
            ["/v1/other/a:download", "/v1/files/a/b"],
        ),
        ("/{path=**}", ["/a", "/a/b/c"], [""]),
        ("/v1/{name=shelves/*/books/*}", ["/v1/shelves/s1/books/b1"], ["/v1/shelves/s1/books"]),
        ("/v1/a.b+c", [], ["/v1/aXb+c", "/v1/a.bbc"]),
    ],
)
def test_path_expressions_match_what_the_template_does(
    template: str, matched: list[str], unmatched: list[str]
) -> None:
    from keel.gateway.ingress import path_regex  # noqa: PLC0415

    parsed = parse(template)
    expression = path_regex(parsed)
    for path in matched:
        assert re.fullmatch(expression, path), (expression, path)
        assert Matcher(parsed).match(path) is not None, path  # the gateway agrees
    for path in unmatched:
        assert not re.fullmatch(expression, path), (expression, path)
    if template == "/v1/a.b+c":
        assert re.fullmatch(expression, "/v1/a.b+c")


def _table(service: str, templates: list[str]) -> Any:
    """A route table's stand-in: `templates` of one service, all POST."""
    routes = []
    for template in templates:
        parsed = parse(template)
        rule: Any = SimpleNamespace(path=template)
        method: Any = SimpleNamespace(service=service)
        routes.append(Route("POST", parsed, Matcher(parsed), rule, method))
    return SimpleNamespace(routes=routes)


def test_a_service_with_many_bindings_gets_routes_a_controller_accepts() -> None:
    templates = [f"/v1/things/{{id}}:verb{n}" for n in range(300)]
    made = http_routes(_table("acme.big.v1.BigService", templates), Options())
    assert len(made) == 3  # 300 matches: 128 + 128 + 44
    assert [doc["metadata"]["name"] for doc in made] == [
        "acme.big.v1.bigservice-1",
        "acme.big.v1.bigservice-2",
        "acme.big.v1.bigservice-3",
    ]
    for doc in made:
        rules = doc["spec"]["rules"]
        assert len(rules) <= 16
        assert all(len(rule["matches"]) <= 64 for rule in rules)
        assert sum(len(rule["matches"]) for rule in rules) <= 128
    every = [m["path"]["value"] for d in made for r in d["spec"]["rules"] for m in r["matches"]]
    assert len(every) == 300


def test_long_service_names_make_distinct_valid_names() -> None:
    package = "acme." + "very" * 70 + ".v1"
    first = http_routes(_table(f"{package}.FirstService", ["/v1/a"]), Options())
    second = http_routes(_table(f"{package}.SecondService", ["/v1/b"]), Options())
    names = [first[0]["metadata"]["name"], second[0]["metadata"]["name"]]
    assert names[0] != names[1]
    assert all(
        len(name) <= 253 and re.fullmatch(r"[a-z0-9][-a-z0-9.]*[a-z0-9]", name) for name in names
    )
    assert first[0]["metadata"]["annotations"]["keel.dev/service"] == f"{package}.FirstService"


def test_cors_routes_each_paths_preflight() -> None:
    made = http_routes(_table("acme.a.v1.AService", ["/v1/a", "/v1/a/{id}"]), Options(cors=True))
    matches = [m for r in made[0]["spec"]["rules"] for m in r["matches"]]
    preflights = [m for m in matches if m["method"] == "OPTIONS"]
    assert len(preflights) == 2
    assert {m["path"]["type"] for m in preflights} == {"Exact", "RegularExpression"}
    plain = http_routes(_table("acme.a.v1.AService", ["/v1/a"]), Options())
    assert [m["method"] for m in plain[0]["spec"]["rules"][0]["matches"]] == ["POST"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--backend", "{service}"], "use {name} (order-service) and {package}"),
        (["--backend", "Orders_{name}"], "not a Service name"),
        (["--port", "70000"], "choose one from 1 to 65535"),
        (["--gen", "nowhere"], "nowhere does not exist"),
    ],
)
def test_options_that_cannot_make_routes_are_refused_saying_why(args: list[str], says: str) -> None:
    done = subprocess.run(
        [str(BIN / "keel"), "ingress", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
