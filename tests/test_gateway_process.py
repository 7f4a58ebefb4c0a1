"""`keel gateway` as users run it: its own process, JSON logs, middleware from docs/gateway.md."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import keel.testing
import pytest
from catalog.service import CatalogService
from catalog.store import MemoryStore, seed

from tests.conftest import BIN, REPO, answers, free_port

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
DOC = (REPO / "docs" / "gateway.md").read_text()


def _middleware_example(folder: Path) -> tuple[str, str]:
    """docs/gateway.md's middleware module written into `folder`, and its --middleware value."""
    section = DOC.split("## Middleware", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    command = re.search(r"```sh\n(keel gateway .*?)\n```", section, re.S)
    assert code, section
    assert command, section
    source = textwrap.dedent(code[1])
    filename = source.splitlines()[0].removeprefix("# ").strip()
    (folder / filename).write_text(source)
    reference = re.search(r"--middleware (\S+)", command[1])
    assert reference, command[1]
    return filename, reference[1]


@dataclass
class Running:
    url: str
    log: Path
    upstream: str
    """The address the gateway was told to reach the catalog at."""

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


@asynccontextmanager
async def _keel_gateway(folder: Path, env: dict[str, str], *options: str) -> AsyncIterator[Running]:
    """`keel gateway` in its own process in front of the catalog, logging to a file in `folder`,
    with KEEL_* settings from `env` only; yields once it answers /healthz."""
    async with keel.testing.cluster(CatalogService(seed(MemoryStore()))) as running:
        port = free_port()
        upstream = running.address("acme.catalog.v1.CatalogService")
        log = folder / "gateway.log"
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
        with log.open("w") as out:
            process = subprocess.Popen(
                [
                    str(BIN / "keel"),
                    "gateway",
                    "--gen",
                    str(REPO / "gen"),
                    "--default-target",
                    upstream,
                    "--port",
                    str(port),
                    *options,
                ],
                cwd=folder,
                env={**clean, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while not await asyncio.to_thread(answers, f"{url}/healthz"):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.05)
            yield Running(url, log, upstream)
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Running]:
    _, reference = _middleware_example(tmp_path)
    env = {"PYTHONPATH": str(tmp_path), "KEEL_LOG_FORMAT": "json"}
    async with _keel_gateway(tmp_path, env, "--middleware", reference) as running:
        yield running


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _DIRECT.open(request, timeout=10) as response:
            response.read()
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


async def test_one_json_line_per_request_and_middleware_from_the_docs(gateway: Running) -> None:
    status, headers = await asyncio.to_thread(
        _get, f"{gateway.url}/v1/products/p_mug", {"X-Request-Id": "req-42"}
    )
    assert status == 200
    assert re.fullmatch(r"edge;dur=\d+\.\d", headers["server-timing"])  # the docs' middleware
    missing, _ = await asyncio.to_thread(_get, f"{gateway.url}/v1/products/p_nope")
    assert missing == 404
    deadline = time.monotonic() + 10
    while len([x for x in gateway.lines() if x.get("event") == "http"]) < 3:
        assert time.monotonic() < deadline, gateway.log.read_text()
        await asyncio.sleep(0.05)
    requests = [x for x in gateway.lines() if x.get("event") == "http"]  # every line is JSON
    found = next(x for x in requests if x["correlation_id"] == "req-42")
    assert found["method"] == "GET"
    assert found["route"] == "/v1/products/{product_id}"
    assert found["status"] == 200
    assert isinstance(found["duration_ms"], float)
    assert found["subject"] == ""
    assert (found["upstream"], found["via"]) == (gateway.upstream, "grpc")  # transcoded
    assert [x["status"] for x in requests if x["route"] == "/v1/products/{product_id}"] == [
        200,
        404,
    ]
    # The start-up poll of /healthz: an edge endpoint is its own route, and goes nowhere.
    health = next(x for x in requests if x["route"] == "/healthz")
    assert (health["status"], "upstream" in health) == (200, False)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_a_clear_error_not_shared(workers: str) -> None:
    with socket.socket() as holder:  # another server on the port: SO_REUSEPORT would share it
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [str(BIN / "keel"), "gateway", "--gen", str(REPO / "gen"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "KEEL_HOST": "127.0.0.1", "KEEL_WORKERS": workers},
            check=False,
        )
    assert done.returncode == 1, done.stderr
    assert f"keel gateway: cannot listen on 127.0.0.1:{port} for the REST gateway" in done.stderr
    assert '"serving"' not in done.stdout  # it never said it was
    assert "Traceback" not in done.stderr


def test_a_middleware_that_does_not_load_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "keel"), "gateway", "--gen", str(REPO / "gen"), "--middleware", "nope:Thing"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "keel gateway: --middleware 'nope:Thing'" in done.stderr
    assert "Traceback" not in done.stderr


async def test_keel_log_calls_false_turns_the_request_line_off(tmp_path: Path) -> None:
    env = {"KEEL_LOG_FORMAT": "json", "KEEL_LOG_CALLS": "false"}
    async with _keel_gateway(tmp_path, env) as running:
        status, _ = await asyncio.to_thread(_get, f"{running.url}/v1/products/p_mug")
        assert status == 200
    events = [x.get("event") for x in running.lines()]
    assert "serving" in events
    assert "http" not in events
