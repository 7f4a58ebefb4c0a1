"""The README's tour, run the way a user runs it: `keel dev` in its own processes, then each
curl line and Python snippet of README.md, read from README.md itself and checked against what
the README says they return."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import keel
import pytest

from tests import devprocess
from tests.conftest import REPO, answers

README = (REPO / "README.md").read_text()
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_EXPECTATION = re.compile(r"#\s*(\d{3}),\s*(.+)$")
_ORDER_ID = re.compile(r"o_[0-9A-HJKMNP-TV-Z]{26}")  # the README's o_01JDB0Z7M4W8YF3Q2N5K6R9T1C
_UNITS_SOLD = "the mug: unitsSold counts the order"


def _step(number: int) -> str:
    """The text of tour step `number` (from its `N. ` to the next step)."""
    found = re.search(rf"^{number}\. .*?(?=^\d+\. |\Z|^## )", README, re.M | re.S)
    assert found, f"README has no tour step {number}"
    return found[0]


def _blocks(text: str, language: str) -> list[str]:
    return [textwrap.dedent(block) for block in re.findall(rf"```{language}\n(.*?)```", text, re.S)]


@dataclass
class Curl:
    command: str
    status: int
    says: str


def _curl_lines() -> list[Curl]:
    """Step 5's curl commands (a command runs on until the next `curl`), with their comments."""
    block = next(b for b in _blocks(_step(5), "sh") if b.lstrip().startswith("curl"))
    commands: list[list[str]] = []
    for line in block.splitlines():
        if line.startswith("curl"):
            commands.append([line])
        elif line.strip():
            commands[-1].append(line)
    found = []
    for lines in commands:
        expected = _EXPECTATION.search(lines[-1])
        assert expected, f"README curl line without '# <status>, <what>': {lines}"
        found.append(Curl("\n".join(lines), int(expected[1]), expected[2].strip()))
    return found


@dataclass
class Shop:
    port: int
    registry: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """`keel dev` as `make run` starts it, on free ports, its state (databases, the broker's
    store) in a temporary folder: never the repository's `.keel/state`."""
    folder = tmp_path_factory.mktemp("tour")
    launched = devprocess.launch(folder)
    process = launched.process
    shop = Shop(launched.port, launched.registry, launched.log)
    try:
        deadline = time.monotonic() + 60
        while shop.output().count("serving") < 3 or not answers(f"{shop.url}/healthz"):
            assert process.poll() is None, shop.output()
            assert time.monotonic() < deadline, shop.output()
            time.sleep(0.05)  # polling for the condition, not waiting a fixed time
        yield shop
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        finally:
            process.kill()


def _run(command: str, shop: Shop) -> subprocess.CompletedProcess[str]:
    """A README command in bash from the repository root, with the tour's addresses."""
    command = command.replace("localhost:8080", f"localhost:{shop.port}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
    return subprocess.run(
        ["bash", "-c", command],
        cwd=REPO,
        env={**env, "KEEL_REGISTRY": str(shop.registry)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _violations(body: dict[str, Any]) -> list[dict[str, str]]:
    bad = [d for d in body["details"] if d["@type"].endswith("/google.rpc.BadRequest")]
    assert len(bad) == 1, body
    violations: list[dict[str, str]] = bad[0]["fieldViolations"]
    return violations


def _check_curl(says: str, body: Any) -> None:
    """What the README's comment promises, checked on the JSON answer."""
    if says == "the mug: price, stock":
        assert body["title"] == "Mug"
        assert int(body["priceCents"]) > 0
        assert body["stock"] >= 0
    elif says == "one violation per field":
        fields = [v["field"] for v in _violations(body)]
        assert len(fields) == len(set(fields)) >= 2, body
        assert {"lines", "paymentMethodToken"} <= set(fields)  # the JSON names the user sent
    elif says == "the order, CONFIRMED":
        assert body["order"]["state"] == "ORDER_STATE_CONFIRMED"
        assert body["order"]["lines"][0]["productId"] == "p_mug"
        assert _ORDER_ID.fullmatch(body["order"]["orderId"]), body  # "o_01J…"
    else:
        pytest.fail(f"the README promises something this test does not know: {says!r}")


def _curl(curl: Curl, shop: Shop) -> Any:
    """Run a README curl line; its JSON answer, once its status is the README's."""
    assert curl.command.startswith("curl ")
    done = _run("curl -w '\\n%{http_code}' " + curl.command.removeprefix("curl "), shop)
    assert done.returncode == 0, done.stderr
    text, _, code = done.stdout.rpartition("\n")
    assert int(code) == curl.status, (done.stdout, shop.output()[-3000:])
    return json.loads(text)


def _placed_mugs(shop: Shop) -> int:
    """Mugs in customer c1's confirmed orders (the tour's customer), read from orders."""
    done = _run("curl -s 'localhost:8080/v1/customers/c1/orders?pageSize=100'", shop)
    orders = json.loads(done.stdout)
    assert isinstance(orders, list), orders  # the response body is the page's orders
    assert len(orders) < 100, "the tour placed more orders than one page holds"
    return sum(
        int(line.get("quantity", 0))
        for order in orders
        if order["state"] == "ORDER_STATE_CONFIRMED"
        for line in order["lines"]
        if line["productId"] == "p_mug"
    )


def _check_units_sold(curl: Curl, shop: Shop) -> None:
    """The README's "eventually": the mug's unitsSold reaches the mugs in confirmed orders (read
    again until it does, with a deadline)."""
    if not _placed_mugs(shop):  # run alone: place the README's order first
        order = next(c for c in _curl_lines() if c.says == "the order, CONFIRMED")
        _curl(order, shop)
    placed = _placed_mugs(shop)
    deadline = time.monotonic() + 30
    while (sold := int(_curl(curl, shop).get("unitsSold", 0))) != placed:
        assert time.monotonic() < deadline, (sold, placed, shop.output()[-3000:])
        time.sleep(0.05)  # polling for the condition, not waiting a fixed time


@pytest.mark.parametrize("curl", _curl_lines(), ids=lambda c: c.says)
def test_readme_curl_lines(shop: Shop, curl: Curl) -> None:
    if curl.says == _UNITS_SOLD:
        _check_units_sold(curl, shop)
    else:
        _check_curl(curl.says, _curl(curl, shop))


def test_readme_asyncapi_document_describes_the_orders_events(shop: Shop) -> None:
    assert "`localhost:8080/asyncapi.json`" in _step(5)
    done = _run("curl -s localhost:8080/asyncapi.json", shop)
    document = json.loads(done.stdout)
    assert document["asyncapi"].startswith("3.")
    assert "OrderPlaced" in json.dumps(document)


def _python_snippet() -> str:
    return next(b for b in _blocks(_step(5), "sh") if "python -c" in b)


_CORRELATION = re.compile(r"correlation_id(?:\x1b\[[0-9;]*m)?=(?:\x1b\[[0-9;]*m)?([0-9a-f]{32})")


def _correlation_ids(output: str, service: str, containing: str = "") -> list[str]:
    """The correlation ids on the console lines of one service (that contain `containing`),
    in the order they were logged."""
    prefix = f"{service}\x1b[0m │"
    return [
        found
        for line in output.splitlines()
        if prefix in line and containing in line
        for found in _CORRELATION.findall(line)
    ]


def test_readme_python_snippet_places_an_order_traced_by_one_correlation_id(shop: Shop) -> None:
    before = shop.output()
    done = _run(_python_snippet(), shop)
    assert done.returncode == 0, done.stderr
    assert "ORDER_STATE_CONFIRMED" in done.stdout
    order_id = re.search(r'order_id: "([^"]+)"', done.stdout)
    assert order_id, done.stdout
    # "watch one correlation id go through orders, catalog and payments in the logs": the
    # snippet's CreateOrder is the last one orders logged (its line is written as it ends).
    deadline = time.monotonic() + 10
    while True:
        new = shop.output()[len(before) :]
        created = _correlation_ids(new, "orders", "CreateOrder")
        downstream = set(_correlation_ids(new, "catalog")) & set(_correlation_ids(new, "payments"))
        if (created and created[-1] in downstream) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert created, new
    assert created[-1] in downstream, new


def _variations() -> list[tuple[str, str]]:
    """The `Try ...` line's edits of the snippet, with what the README says they do."""
    line = re.search(r"Try (.*)", _step(5), re.S)
    assert line, "README step 5 has no 'Try ...' line"
    text = " ".join(line[1].split())
    found = re.findall(r"`(\w+=[^`]+)`[^`(]*(?:\(([^)]*)\))?", text)
    edits, pending = [], []
    for edit, says in found:
        pending.append(edit)
        if says:
            edits += [(e, says) for e in pending]
            pending = []
    assert len(edits) == 3, text
    return edits


def _edited(snippet: str, edit: str) -> str:
    name, _, value = edit.partition("=")
    changed, count = re.subn(rf"\b{name}=[^,)]+", f"{name}={value}", snippet)
    assert count == 1, (edit, snippet)
    return changed


@pytest.mark.parametrize(("edit", "says"), _variations())
def test_readme_python_variations(shop: Shop, edit: str, says: str) -> None:
    done = _run(_edited(_python_snippet(), edit), shop)
    if says == "a validation error naming the field":
        assert done.returncode != 0
        last = done.stderr.strip().splitlines()[-1]  # the error the user reads
        assert last.startswith("keel.errors.InvalidArgument: "), done.stderr
        assert edit.partition("=")[0] in last, done.stderr
    elif says == "a rejected order, stock returned":
        assert done.returncode == 0, done.stderr
        assert "ORDER_STATE_REJECTED" in done.stdout
        # The stock the order reserved is back: a second product read equals the first.
        read = _run(_curl_lines()[0].command.split("#")[0], shop)
        stock = json.loads(read.stdout)["stock"]
        again = _run(_edited(_python_snippet(), edit), shop)
        assert "ORDER_STATE_REJECTED" in again.stdout
        assert (
            json.loads(_run(_curl_lines()[0].command.split("#")[0], shop).stdout)["stock"] == stock
        )
    else:
        pytest.fail(f"the README promises something this test does not know: {says!r}")


async def test_readme_steps_3_and_4_implement_and_call_a_service() -> None:
    """Step 3's class served, step 4's client code run against it (a NotFound, as written)."""
    implementation = next(b for b in _blocks(_step(3), "python"))
    namespace: dict[str, Any] = {}
    exec(compile(implementation, "README step 3", "exec"), namespace)
    async with keel.Server([namespace["Orders"]()], port=0) as server:
        calling = next(b for b in _blocks(_step(4), "python"))
        calling = calling.replace("127.0.0.1:50051", f"127.0.0.1:{server.port}")
        body = textwrap.indent(calling, "    ")
        program = f"async def main():\n{body}\n"
        scope: dict[str, Any] = dict(namespace)
        exec(compile(program, "README step 4", "exec"), scope)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await scope["main"]()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "order o-1 does not exist"


def test_ending_a_stream_early_logs_one_line_and_cancels_the_call(shop: Shop) -> None:
    """`curl -m 2 .../v1/orders/<id>:watch`: the client leaves; no traceback anywhere."""
    order = next(c for c in _curl_lines() if c.says == "the order, CONFIRMED")
    placed = _run(order.command.split("#")[0], shop)
    order_id = json.loads(placed.stdout)["order"]["orderId"]
    before = shop.output()
    done = _run(f"curl -s -m 2 localhost:8080/v1/orders/{order_id}:watch", shop)
    assert done.returncode == 28, done  # curl's own timeout: it went away mid-stream
    assert "ORDER_STATE_CONFIRMED" in done.stdout
    # The gateway passes the request through to orders' own REST port: each logs one line,
    # status 499 (the client went away), and orders cancels the method.
    left = re.compile(r"status(?:\x1b\[[0-9;]*m)?=(?:\x1b\[[0-9;]*m)?499\b")

    def gone(new: str, who: str) -> list[str]:
        return [
            line
            for line in new.splitlines()
            if f"{who}\x1b[0m │" in line and ":watch" in line and left.search(line)
        ]

    deadline = time.monotonic() + 10
    while not gone(shop.output()[len(before) :], "orders") and time.monotonic() < deadline:
        time.sleep(0.05)
    new = shop.output()[len(before) :]
    assert len(gone(new, "orders")) == 1, new
    assert len(gone(new, "gateway")) == 1, new
    assert "Traceback" not in new
    assert "Exception in ASGI" not in new
