"""`/docs` in a real browser (Debian's chromium driven by Playwright), in front of `keel dev`.

The page is opened on the gateway and on a service's own REST port, as users do after
`make run`: Swagger UI lists the operations and answers "Try it out" (with a bearer token from
"Authorize" for a secured one), the Events tab renders `/asyncapi.json`, the System tab draws
the diagram. Every request the page makes goes to the server that served it (no CDN). A
screenshot is kept under $TEST_ARTIFACTS_DIR (else the test's tmp_path).
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from keel.gateway import assets, diagram, events_doc
from keel.gateway.endpoints import Endpoints
from keel.gateway.routes import RouteTable

from tests import devprocess
from tests.conftest import REPO, answers
from tests.devprocess import SERVICES

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

SECRET = "keel-docs-page-test-secret-long-enough-for-hs256"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_WAIT_MS = 15_000


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    with _DIRECT.open(url, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


# -- the page and its files, without a browser -------------------------------------------------


def test_pins_readme_and_shipped_files_agree() -> None:
    pins = json.loads((assets.WEBUI / "vendor.json").read_text())
    readme = (assets.WEBUI / "README.md").read_text()
    for package, pin in pins.items():
        assert f"{package}](" in readme, package
        assert f"| {pin['version']} |" in readme, package
        for name in pin["files"]:
            assert (assets.WEBUI / assets.folder(package) / Path(name).name).is_file(), name
    shipped = {p for p in assets.WEBUI.rglob("*") if p.is_file()}
    served = {asset.file for asset in assets.ASSETS.values()}
    own = {"vendor.json", "README.md", "SHA256SUMS"}
    assert shipped - served == {assets.WEBUI / name for name in own}


def test_the_shipped_files_are_the_vendored_ones() -> None:
    """Offline: every file `make webui` wrote has the sha256 it recorded (an edit by hand, a
    truncated file or a file left out fails here; the npm check below needs the registry)."""
    sums = (assets.WEBUI / "SHA256SUMS").read_text().splitlines()
    recorded = {name: digest for digest, name in (line.split("  ", 1) for line in sums)}
    shipped = {
        p.relative_to(assets.WEBUI).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in assets.WEBUI.glob("*/*")
        if p.is_file()
    }
    assert shipped == recorded
    assert len(recorded) >= len({asset.file for asset in assets.ASSETS.values()})


def test_the_diagram_draws_each_event_from_publisher_to_subscriber() -> None:
    document = {
        "channels": {"a.shipped": {"messages": {"Shipped": {"$ref": "#/components/messages/x"}}}},
        "operations": {
            "pub": {"action": "send", "channel": {"$ref": "#/channels/a.shipped"}},
            "o": {
                "action": "send",
                "channel": {"$ref": "#/channels/a.shipped"},
                "x-keel-service": "a.v1.Orders",
            },
            "s": {
                "action": "receive",
                "channel": {"$ref": "#/channels/a.shipped"},
                "x-keel-service": "b.v1.Mail",
            },
        },
    }
    openapi = {"paths": {"/v1/x": {"get": {"tags": ["Orders"]}, "post": {"tags": ["Billing"]}}}}
    names = diagram.services(openapi, document)
    assert names == ["a.v1.Orders", "b.v1.Mail", "Billing"]  # Orders is a.v1.Orders
    source = diagram.mermaid(names, document, own=["b.v1.Mail"])
    assert '  s_a_2e_v1_2e_Orders -. "Shipped" .-> s_b_2e_v1_2e_Mail' in source
    assert '  s_Billing["<b>Billing</b>"]' in source
    assert source.endswith("  class s_b_2e_v1_2e_Mail own\n")


def test_keel_graphs_diagram_is_drawn_with_the_pages_own_services_in_bold() -> None:
    source = (REPO / "gen/system.mmd").read_text()  # what make gen wrote
    assert "%% keel-service acme.orders.v1.OrderService n_orders" in source
    outlined = diagram.outlined(source, own=["acme.orders.v1.OrderService"])
    assert outlined.startswith(source.rstrip("\n"))
    assert outlined.endswith("  classDef own stroke-width:3px\n  class n_orders own\n")
    assert diagram.outlined(source, own=["x.v1.Unknown"]) == source
    served = Endpoints({}, _nobody, diagram=source, own=["acme.catalog.v1.CatalogService"])
    assert b"keel graph</code> draws it" in served._page
    assert b"class n_catalog own" in served._page


async def _nobody() -> list[str]:
    return []


def test_services_known_by_full_name_are_not_drawn_twice() -> None:
    routes = RouteTable.from_generated(REPO / "gen")  # the shop's, and any other service's
    served = [service.name for service in routes.services]
    assert set(SERVICES) <= set(served)
    names = diagram.services(routes.openapi, routes.asyncapi, [*served, served[0]])
    assert sorted(names) == sorted(served)  # not PaymentService again from its tag
    by_tag = diagram.services(routes.openapi, None)
    assert {"CatalogService", "OrderService", "PaymentService"} <= set(by_tag)  # by tag only
    assert len(by_tag) == len(set(by_tag))


def test_a_services_asyncapi_keeps_only_its_channels_and_what_they_use() -> None:
    whole = json.loads((REPO / "tests/golden/out/asyncapi.json").read_text())
    services = {op["x-keel-service"] for op in whole["operations"].values()}
    assert len(services) > 1
    for service in sorted(services):
        own = events_doc.for_services(whole, {service})
        assert {op["x-keel-service"] for op in own["operations"].values()} == {service}
        used = {op["channel"]["$ref"].rpartition("/")[2] for op in own["operations"].values()}
        assert set(own["channels"]) == used
        text = json.dumps(own)
        for section, items in own.get("components", {}).items():
            for name in items:  # every component kept is referred to
                assert f'"#/components/{section}/{name}"' in text, name
        for ref in re.findall(r'"\$ref": "(#/[^"]+)"', text):  # and every reference resolves
            node: Any = own
            for part in ref[2:].split("/"):
                node = node[part]
    nothing = events_doc.for_services(whole, {"no.such.Service"})
    assert (nothing["channels"], nothing["operations"], "components" in nothing) == ({}, {}, False)


def test_make_webui_fetches_the_pinned_files_again() -> None:
    """docs/gateway.md: `make webui` runs the script; its --check compares the shipped files
    with the registry's tarballs (where npm and the registry are reachable)."""
    dry = subprocess.run(
        ["make", "-n", "webui"], check=False, cwd=REPO, capture_output=True, text=True
    )
    assert "tools/keel/scripts/vendor_webui.py" in dry.stdout, dry.stdout + dry.stderr
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    script = REPO / "tools/keel/scripts/vendor_webui.py"
    done = subprocess.run(
        [sys.executable, str(script), "--check"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    unreachable = r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|code E5\d\d|network"
    if re.search(unreachable, done.stderr):
        pytest.skip(f"the npm registry is not reachable: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr


async def test_the_gateway_serves_the_page_and_its_files() -> None:
    from keel.gateway import Gateway  # noqa: PLC0415

    from tests.conftest import serve_asgi  # noqa: PLC0415

    routes = RouteTable.from_generated(REPO / "gen")
    async with serve_asgi(Gateway(routes, default_target="127.0.0.1:9")) as url:
        status, headers, body = await _in_thread(_get, f"{url}/docs")
        assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
        page = body.decode()
        referenced = re.findall(r'(?:src|href)="([^"#]+)"', page)
        referenced += re.findall(r'"(docs/[^"]+)"', page)
        assert not [r for r in referenced if "//" in r]  # nothing from elsewhere
        files = {r for r in referenced if r.startswith("docs/")}
        assert len(files) == 5, files
        for path in files:
            status, headers, body = await _in_thread(_get, f"{url}/{path}")
            kind = "text/javascript" if path.endswith(".js") else "text/css"
            assert headers["content-type"] == f"{kind}; charset=utf-8"
            assert headers["cache-control"] == "public, max-age=31536000, immutable"
            assert body == assets.ASSETS[f"/{path}"].file.read_bytes()
            assert headers["vary"] == "accept-encoding"
            assert "content-encoding" not in {key.lower() for key in headers}
            zipped = urllib.request.Request(f"{url}/{path}", headers={"Accept-Encoding": "gzip"})
            status, headers, body = await _in_thread(_read, zipped)
            assert (status, headers["content-encoding"]) == (200, "gzip")
            assert gzip.decompress(body) == assets.ASSETS[f"/{path}"].file.read_bytes()
            assert int(headers["content-length"]) == len(body)
        assert "n_orders -. &quot;OrderCancelled, OrderPlaced&quot; .-&gt; n_catalog" in page
        missing = urllib.request.Request(f"{url}/docs/swagger-ui-dist@0.0.1/swagger-ui.css")
        with pytest.raises(urllib.error.HTTPError) as refused:
            await _in_thread(_DIRECT.open, missing, timeout=10)
        refused.value.close()
        assert refused.value.code == 404  # below /docs, only the shipped files


def _read(request: urllib.request.Request) -> tuple[int, dict[str, str], bytes]:
    with _DIRECT.open(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("GZIP;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("br;q=1, *;q=0.1", True),
        ("", False),
        ("identity", False),
        ("br, deflate", False),
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),
        ("*;q=0", False),
        ("gzip;q=nonsense", False),
    ],
)
def test_gzip_is_sent_only_when_accepted(accept_encoding: str, gzipped: bool) -> None:
    assert assets.accepts_gzip(accept_encoding) is gzipped


async def _in_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    import asyncio  # noqa: PLC0415

    return await asyncio.to_thread(function, *args, **kwargs)


# -- keel dev and a browser --------------------------------------------------------------------


@dataclass
class Dev:
    gateway: str
    rest: dict[str, str]
    """Each service's REST address, as keel dev printed it."""
    log: Path
    artifacts: Path
    outside: list[str] = field(default_factory=list)
    """Requests the pages made to anything but the server that served them."""
    errors: list[str] = field(default_factory=list)
    """Uncaught errors in the pages' scripts."""


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """`keel dev` (what `make run` starts), every service and the gateway verifying tokens."""
    folder = tmp_path_factory.mktemp("docs-page")
    launched = devprocess.launch(folder, env={"KEEL_JWT_SECRET": SECRET})
    process, log, port = launched.process, launched.log, launched.port
    try:
        deadline = time.monotonic() + 60
        gateway = f"http://127.0.0.1:{port}"
        while "Ctrl-C stops them all" not in log.read_text() or not answers(f"{gateway}/healthz"):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)  # polling for the condition, not waiting a fixed time
        address = re.compile(r"^\s+(\S+)\s+127\.0\.0\.1:\d+\s+(http://\S+)\s", re.M)
        rest = dict(address.findall(log.read_text()))
        artifacts = Path(os.environ.get("TEST_ARTIFACTS_DIR") or folder)
        artifacts.mkdir(parents=True, exist_ok=True)
        yield Dev(gateway, rest, log, artifacts)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=30) == 0, log.read_text()
        finally:
            process.kill()  # (a no-op once it exited)
            process.wait(timeout=30)


def _chromium() -> str:
    """Debian's chromium; the test is skipped without it, or fails where `CI` is set."""
    found = shutil.which("chromium")
    if found is None:
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI runs the browser tests)")
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    executable = _chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


def _open(browser: Browser, dev: Dev, base: str) -> Page:
    """A new page on `base`/docs; requests anywhere else are refused and recorded."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    def only_here(route: Any) -> None:
        if route.request.url.startswith(base + "/"):
            route.continue_()
        else:
            dev.outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_here)
    page.on("pageerror", lambda error: dev.errors.append(str(error)))
    page.goto(f"{base}/docs")
    return page


def _try_it_out(page: Page, tag: str, operation: str, **parameters: str) -> tuple[str, str]:
    """Open an operation, fill its parameters, execute: the status and body the page shows."""
    from playwright.sync_api import expect  # noqa: PLC0415

    block = page.locator(f"#operations-{tag}-{operation}")
    block.locator(".opblock-summary").click()
    block.locator(".try-out__btn").click()
    for name, value in parameters.items():
        block.locator(f"tr[data-param-name='{name}'] input").fill(value)
    block.locator(".execute").click()
    answer = block.locator(".live-responses-table tbody tr.response").first
    expect(answer.locator(".response-col_status")).not_to_be_empty(timeout=_WAIT_MS)
    status = answer.locator(".response-col_status").inner_text().strip()
    return status, answer.locator(".response-col_description pre").first.inner_text()


def _authorize(page: Page, token: str) -> None:
    page.locator(".auth-wrapper .authorize").click()
    dialog = page.locator(".dialog-ux .modal-ux")
    dialog.locator("input").fill(token)
    dialog.locator(".auth-btn-wrapper .authorize").click()
    dialog.locator(".btn-done").click()


def _events(page: Page, channel: str) -> None:
    """Open the Events tab: the AsyncAPI component shows `channel`."""
    page.locator("#tab-events").click()
    shown = page.locator("#asyncapi").get_by_text(channel).filter(visible=True)
    shown.first.wait_for(timeout=_WAIT_MS)


def test_the_gateways_docs_page_in_a_browser(browser: Browser, dev: Dev) -> None:
    page = _open(browser, dev, dev.gateway)
    tags = page.locator(".opblock-tag")
    tags.first.wait_for(timeout=_WAIT_MS)
    # A group per service with REST routes, in the document's order: the shop's and any other
    # service's of the workspace (keel dev serves the shop here; the gateway routes them all).
    _, _, served = _get(f"{dev.gateway}/openapi.json")
    operations = [o for path in json.loads(served)["paths"].values() for o in path.values()]
    groups = list(dict.fromkeys(tag for operation in operations for tag in operation["tags"]))
    assert {"CatalogService", "OrderService", "PaymentService"} <= set(groups)
    assert tags.all_inner_texts() == groups
    status, body = _try_it_out(
        page, "CatalogService", "CatalogService_GetProduct", product_id="p_mug"
    )
    assert (status, json.loads(body)["title"]) == ("200", "Mug")
    status, _ = _try_it_out(page, "OrderService", "OrderService_ListOrders", customer_id="alice")
    assert status == "401"  # a secured operation, no token yet
    token = jwt.encode({"sub": "alice", "exp": int(time.time() + 300)}, SECRET, algorithm="HS256")
    _authorize(page, token)
    block = page.locator("#operations-OrderService-OrderService_ListOrders")
    block.locator(".execute").click()
    answer = block.locator(".live-responses-table tbody tr.response").first
    answer.locator(".response-col_status", has_text="200").wait_for(timeout=_WAIT_MS)
    assert f"Authorization: Bearer {token}" in block.locator(".curl-command").inner_text()
    page.locator(
        "#operations-CatalogService-CatalogService_GetProduct"
    ).scroll_into_view_if_needed()
    shot = dev.artifacts / "docs-page-gateway.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    _events(page, "acme.orders.v1.order.placed")
    page.locator("#tab-system").click()
    svg = page.locator("#system-diagram svg")
    svg.wait_for(timeout=_WAIT_MS)
    drawn = svg.text_content() or ""
    assert "OrderCancelled, OrderPlaced" in drawn  # an event arrow
    assert "ReserveStock" in drawn  # a call arrow: keel graph's diagram (gen/system.mmd)
    shot = dev.artifacts / "docs-page-gateway-system.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    assert (dev.outside, dev.errors) == ([], [])


def test_a_services_own_docs_page_in_a_browser(browser: Browser, dev: Dev) -> None:
    catalog = dev.rest["acme.catalog.v1.CatalogService"]
    page = _open(browser, dev, catalog)
    tags = page.locator(".opblock-tag")
    tags.first.wait_for(timeout=_WAIT_MS)
    assert tags.all_inner_texts() == ["CatalogService"]
    status, body = _try_it_out(
        page, "CatalogService", "CatalogService_GetProduct", product_id="p_mug"
    )
    assert (status, json.loads(body)["productId"]) == ("200", "p_mug")
    _events(page, "acme.orders.v1.order.cancelled")
    shot = dev.artifacts / "docs-page-catalog.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    assert (dev.outside, dev.errors) == ([], [])
    # Its own /asyncapi.json: the channels catalog subscribes to; payments has none.
    _, _, own = _get(f"{catalog}/asyncapi.json")
    operations = json.loads(own)["operations"].values()
    assert {op["x-keel-service"] for op in operations} == {"acme.catalog.v1.CatalogService"}
    _, _, html = _get(f"{catalog}/docs")  # its diagram: keel graph's, catalog's node in bold
    assert b"class n_catalog own" in html
    assert b"n_orders --&gt;|&quot;ReleaseStock&lt;br/&gt;ReserveStock&quot;| n_catalog" in html
    _, _, none = _get(f"{dev.rest['acme.payments.v1.PaymentService']}/asyncapi.json")
    assert json.loads(none)["channels"] == {}
    _, _, whole = _get(f"{dev.gateway}/asyncapi.json")
    assert json.loads(whole) == json.loads((REPO / "gen/asyncapi.json").read_text())


class _Prefixed(http.server.BaseHTTPRequestHandler):
    """A reverse proxy serving `upstream` under /api/ (as an ingress with a path prefix does)."""

    upstream = ""

    def _forward(self) -> None:
        if not self.path.startswith("/api/"):
            self.send_error(404)
            return
        length = int(self.headers.get("content-length") or 0)
        request = urllib.request.Request(
            self.upstream + self.path.removeprefix("/api"),
            data=self.rfile.read(length) if length else None,
            method=self.command,
            headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
        )
        try:
            answer = _DIRECT.open(request, timeout=10)
        except urllib.error.HTTPError as error:
            answer = error
        with answer:
            body = answer.read()
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _forward  # noqa: N815 (http.server calls them by these names)

    def log_message(self, *args: Any) -> None:  # quiet
        pass


def test_behind_a_path_prefix_try_it_out_keeps_the_prefix(browser: Browser, dev: Dev) -> None:
    handler = type("Handler", (_Prefixed,), {"upstream": dev.gateway})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{proxy.server_address[1]}/api"
        page = _open(browser, dev, base)  # anything outside /api/ is refused and recorded
        page.locator(".opblock-tag").first.wait_for(timeout=_WAIT_MS)
        status, body = _try_it_out(
            page, "CatalogService", "CatalogService_GetProduct", product_id="p_mug"
        )
        assert (status, json.loads(body)["title"]) == ("200", "Mug")
        assert (dev.outside, dev.errors) == ([], [])
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(timeout=10)
