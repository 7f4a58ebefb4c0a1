"""`keel gateway` passing requests through to services' own REST ports (keel.gateway.passthrough).

Real processes and real HTTP: the conformance service (tests/servers/mirror_server.py) serving
REST itself, a `keel gateway` process in front of it; for what only a misbehaving upstream
shows (hop-by-hop headers, answers cut short, a kept-alive connection closed under a request), a
plain asyncio HTTP server written here. No fixed waits: every wait is for a condition.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keel
import pytest
from keel.gateway import Gateway, RouteTable
from keel.runtime import discovery, httpmetrics
from keel.runtime.config import ConfigError, Settings
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BIN, REPO, answers, free_port, serve_asgi
from tests.test_gateway import _DIRECT, Reply, call
from tests.test_gateway_conformance import SERVICE, _mirror_service, generated

__all__ = ["generated"]  # (the module-scoped fixture: `keel gen` of the conformance protos)

KEY = "CONFORMANCE_V1_HTTPRULESERVICE"
WAIT = 30.0


def _until(condition: Callable[[], bool], what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling for the condition, not waiting a fixed time


@dataclass
class Process:
    """A child process whose output goes to `log`."""

    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.log.parent,
                env={**clean, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=WAIT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _service(generated: Path, folder: Path, rest_port: int) -> Process:
    env = {
        "KEEL_HOST": "127.0.0.1",
        "KEEL_PORT": "0",
        "KEEL_METRICS_PORT": "0",
        "KEEL_REST_PORT": str(rest_port),
        "KEEL_LOG_FORMAT": "json",
        "KEEL_GRACE_PERIOD": "1",
    }
    command = [sys.executable, str(REPO / "tests" / "servers" / "mirror_server.py")]
    return Process([*command, str(generated)], env, folder / "service.log")


def _serving(service: Process, rest_port: int) -> Callable[[], bool]:
    url = f"http://127.0.0.1:{rest_port}/healthz"
    return lambda: (service.running() or pytest.fail(service.output())) and answers(url)


@dataclass
class Front:
    """The mirror service in its own process and a `keel gateway` process in front of it."""

    url: str
    rest_port: int
    service: Process
    gateway: Process

    def restart_service(self) -> None:
        self.service.start()
        _until(_serving(self.service, self.rest_port), "the service to serve again")


@pytest.fixture
def front(generated: Path, tmp_path: Path) -> Iterator[Front]:
    rest_port, port = free_port(), free_port()
    service = _service(generated, tmp_path, rest_port)
    gateway = Process(
        [str(BIN / "keel"), "gateway", "--gen", str(generated), "--port", str(port)],
        {
            f"KEEL_REST_TARGET_{KEY}": f"127.0.0.1:{rest_port}",
            "KEEL_GATEWAY_UPSTREAM": "rest",
            "KEEL_LOG_FORMAT": "json",
        },
        tmp_path / "gateway.log",
    )
    try:
        service.start()
        _until(_serving(service, rest_port), "the service to serve")
        gateway.start()
        url = f"http://127.0.0.1:{port}"
        _until(lambda: gateway.running() and answers(f"{url}/healthz"), "the gateway")
        yield Front(url, rest_port, service, gateway)
    finally:
        gateway.stop()
        service.stop()


def _get(url: str, **headers: str) -> Reply:
    return asyncio.run(call(url, headers=headers or None))


def test_the_gateway_says_it_passes_through(front: Front) -> None:
    serving = [json.loads(line) for line in front.gateway.output().splitlines() if "{" in line]
    line = next(e for e in serving if e.get("event") == "serving")
    assert line["rest"] == SERVICE
    reply = _get(f"{front.url}/v1/items/i1?name=n")
    assert reply.status == 200
    assert reply.body["seen"]["rpc"] == "variable"  # type: ignore[index]
    assert reply.headers["x-request-id"] == reply.body["seen"]["x-request-id"]  # type: ignore[index]

    def access(prefix: str) -> list[dict[str, Any]]:
        return [
            e
            for e in _events(front.gateway)
            if e.get("event") == "http" and e["route"].startswith(prefix)
        ]

    _until(lambda: bool(access("/v1/")), "the access line")
    assert [(e["method"], e["route"], e["status"]) for e in access("/v1/")] == [
        ("GET", "/v1/items/{id}", 200)
    ]
    passed = access("/v1/")[0]
    assert (passed["upstream"], passed["via"]) == (f"127.0.0.1:{front.rest_port}", "rest")
    health = access("/healthz")[0]  # the fixture's poll: an edge endpoint is a route of its own
    assert health["status"] == 200
    assert "upstream" not in health


def test_the_gateway_counts_what_it_passes_through(front: Front) -> None:
    for path in ("/v1/items/i1", "/v1/items/i2", "/v1/nowhere"):
        _get(f"{front.url}{path}")
    front.service.kill()
    assert _get(f"{front.url}/v1/items/i3").status == 503
    found = _metric_counts(_get_text(f"{front.url}/metrics"))
    route = "/v1/items/{id}"
    assert found[("GET", route, "200")] == 2
    assert found[("GET", route, "503")] == 1
    assert found[("GET", "", "404")] == 1
    # Edge endpoints are routes of their own: this scrape is counted by the next one.
    assert ("GET", "/metrics", "200") not in found
    again = _metric_counts(_get_text(f"{front.url}/metrics"))
    assert again[("GET", "/metrics", "200")] == 1
    assert again[("GET", "/healthz", "200")] == found[("GET", "/healthz", "200")]


def _metric_counts(text: str) -> dict[tuple[str, ...], float]:
    """http_server_request_duration_seconds_count by (method, route, status)."""
    return {
        tuple(sample.labels[name] for name in httpmetrics.LABEL_NAMES): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "http_server_request_duration_seconds_count"
    }


def _get_text(url: str) -> str:
    with _DIRECT.open(url, timeout=10) as response:
        return str(response.read().decode())


def _events(process: Process) -> list[dict[str, Any]]:
    found = []
    for line in process.output().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def test_a_killed_upstream_is_503_until_it_is_back(front: Front) -> None:
    assert _get(f"{front.url}/v1/items/i1").status == 200  # a kept-alive connection now
    front.service.kill()  # SIGKILL: no drain, its connections reset
    down = _get(f"{front.url}/v1/items/i1")
    assert down.status == 503, down
    assert down.body["code"] == 14  # type: ignore[index]
    assert SERVICE in down.body["message"]  # type: ignore[index]
    assert "x-request-id" in down.headers
    ready = _get(f"{front.url}/readyz")
    assert ready.status == 503
    assert SERVICE in json.dumps(ready.body)
    front.restart_service()
    assert _get(f"{front.url}/v1/items/i1").status == 200
    assert _get(f"{front.url}/readyz").status == 200


def test_an_upstream_that_does_not_answer_is_504(front: Front) -> None:
    assert _get(f"{front.url}/v1/items/i1").status == 200
    front.service.signal(signal.SIGSTOP)  # accepts connections (the kernel does), answers none
    try:
        began = time.monotonic()
        late = _get(f"{front.url}/v1/items/i1", **{"grpc-timeout": "1S"})
        took = time.monotonic() - began
    finally:
        front.service.signal(signal.SIGCONT)
    assert late.status == 504, late
    assert late.body["code"] == 4  # type: ignore[index]
    assert 1.0 <= took < 5.0
    # A slow method: the service's own deadline (the gateway's, sent as Grpc-Timeout) ends it.
    slow = _get(f"{front.url}/v1/items/i1?name=slow&count=20", **{"grpc-timeout": "500m"})
    assert slow.status == 504, slow
    assert slow.body["code"] == 4  # type: ignore[index]
    assert _get(f"{front.url}/v1/items/i1").status == 200


def test_a_stream_passes_through_as_it_comes_and_ends_with_its_client(front: Front) -> None:
    host, port = front.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=WAIT)
    try:
        connection.request(
            "GET", "/v1/stream/s1?name=hold", headers={"accept": "text/event-stream"}
        )
        response = connection.getresponse()
        assert response.status == 200
        assert response.headers["content-type"] == "text/event-stream"
        line = response.readline()  # the service is still holding the stream open
        assert line.startswith(b'data: {"result":'), line
    finally:
        connection.close()  # the client goes away: the gateway closes the upstream request
    _until(lambda: "stream cancelled" in front.service.output(), "the method to be cancelled")
    connection = http.client.HTTPConnection(host, int(port), timeout=WAIT)
    try:
        connection.request("GET", "/v1/stream/s1?count=3")
        lines = connection.getresponse().read().splitlines()
    finally:
        connection.close()
    assert [json.loads(line)["result"].get("count", 0) for line in lines] == [0, 1, 2]


# Choosing the upstream: KEEL_GATEWAY_UPSTREAM and where REST addresses come from


@asynccontextmanager
async def _both(generated: Path) -> AsyncIterator[tuple[str, str]]:
    """The mirror service in this process: its gRPC address and its REST address."""
    import importlib  # noqa: PLC0415

    module = importlib.import_module("conformance.v1.http_keel")
    async with keel.Server([_mirror_service(module)], port=0, rest_port=0) as server:
        yield f"127.0.0.1:{server.port}", f"127.0.0.1:{server.rest_port}"


async def _hops(url: str) -> int:
    """How many addresses the service saw in X-Forwarded-For: 1 over gRPC (the gateway's
    client), 2 passed through (the service appends the gateway)."""
    reply = await call(f"{url}/v1/items/i1")
    assert reply.status == 200, reply
    return len(reply.body["seen"]["x-forwarded-for"].split(","))  # type: ignore[index]


@pytest.mark.parametrize(
    ("upstream", "with_rest", "hops"),
    [
        ("auto", True, 2),
        ("auto", False, 1),
        ("grpc", True, 1),
        ("rest", True, 2),
        (None, True, 2),  # KEEL_GATEWAY_UPSTREAM's default: auto
    ],
)
async def test_the_upstream_setting_chooses(
    generated: Path, upstream: str | None, with_rest: bool, hops: int
) -> None:
    async with _both(generated) as (grpc_address, rest_address):
        settings = Settings() if upstream is None else Settings(gateway_upstream=upstream)
        gateway = Gateway(
            RouteTable.from_generated(generated),
            targets={SERVICE: grpc_address},
            rest_targets={SERVICE: rest_address} if with_rest else None,
            settings=settings,
        )
        async with serve_asgi(gateway) as url:
            assert await _hops(url) == hops


def test_rest_needs_every_address(generated: Path, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)  # no services/registry.toml upwards
    routes = RouteTable.from_generated(generated)
    with pytest.raises(ConfigError, match=f"no REST address for {SERVICE}"):
        Gateway(routes, settings=Settings(gateway_upstream="rest"))
    gateway = Gateway(routes, settings=Settings(gateway_upstream="rest", rest_targets={KEY: "h:1"}))
    assert gateway.passthrough.pools[SERVICE].address == "h:1"


def test_rest_addresses_from_the_environment() -> None:
    settings = Settings.from_env(
        {"KEEL_GATEWAY_UPSTREAM": "REST", f"KEEL_REST_TARGET_{KEY}": "http://10.0.0.1:8080/"}
    )
    assert settings.gateway_upstream == "rest"
    assert discovery.resolve_rest(SERVICE, settings) == "10.0.0.1:8080"
    for bad in ({"KEEL_GATEWAY_UPSTREAM": "http"}, {f"KEEL_REST_TARGET_{KEY}": "https://h:1"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Settings.from_env(bad)


def test_rest_addresses_from_the_registry(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(
        '[rest_targets]\n"conformance.v1.HttpRuleService" = "10.0.0.2:8081"\n'
        '[defaults]\ntemplate = "dns:///{name}:50051"\nrest_template = "{name}:8080"\n'
    )
    settings = Settings(registry=str(registry))
    assert discovery.resolve_rest(SERVICE, settings) == "10.0.0.2:8081"
    assert discovery.resolve_rest("acme.orders.v1.OrderService", settings) == "order-service:8080"
    registry.write_text('[targets]\n"acme.orders.v1.OrderService" = "127.0.0.1:1"\n')
    assert discovery.resolve_rest("acme.orders.v1.OrderService", settings) is None


# A hand-made upstream: what Keel's services never do


Handler = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
"""Answers one request (its head and body): whether to keep the connection for another."""


@dataclass
class Raw:
    """A plain HTTP/1.1 server that records each request and answers with `handlers` in turn
    (the last one repeats); `connections` counts the connections it accepted."""

    handlers: list[Handler]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                handler = self.handlers[min(len(self.requests), len(self.handlers)) - 1]
                if not await handler(head, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _ok(body: bytes = b"{}", *extra: bytes) -> Handler:
    async def answer(head: bytes, reader: Any, writer: asyncio.StreamWriter) -> bool:
        lines = [b"HTTP/1.1 200 OK", b"content-type: application/json", *extra]
        lines.append(b"content-length: %d" % len(body))
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        return True

    return answer


async def _hang_up(head: bytes, reader: Any, writer: Any) -> bool:
    return False  # closes the connection without a byte of answer


@asynccontextmanager
async def _raw_front(generated: Path, raw: Raw) -> AsyncIterator[str]:
    server = await asyncio.start_server(raw.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gateway = Gateway(
            RouteTable.from_generated(generated),
            rest_targets={SERVICE: f"127.0.0.1:{port}"},
            settings=Settings(gateway_upstream="rest"),
        )
        async with serve_asgi(gateway) as url:
            yield url
    finally:
        server.close()


def _headers(request: bytes) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in request.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.decode().partition(":")
        found.setdefault(name.lower(), []).append(value.strip())
    return found


async def test_headers_forwarded_and_stripped(generated: Path) -> None:
    raw = Raw([_ok(b'{"ok":true}', b"x-upstream: yes", b"keep-alive: timeout=5", b"server: raw")])
    sent_headers = {
        "authorization": "Bearer abc",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "x-forwarded-for": "203.0.113.7",
        "connection": "keep-alive, x-secret",
        "x-secret": "hop",
        "keep-alive": "timeout=9",
        "te": "trailers",
        "upgrade": "websocket",
        "proxy-authorization": "Basic x",
        "grpc-metadata-x-keel-subject": "admin",
        "x-custom": "kept",
    }
    async with _raw_front(generated, raw) as url:

        def get() -> Reply:  # (http.client sends the headers as given; urllib sets Connection)
            host, port = url.removeprefix("http://").split(":")
            connection = http.client.HTTPConnection(host, int(port), timeout=WAIT)
            try:
                connection.request("GET", "/v1/items/i1?name=n", headers=sent_headers)
                response = connection.getresponse()
                return Reply(response.status, dict(response.headers), json.loads(response.read()))
            finally:
                connection.close()

        reply = await asyncio.to_thread(get)
    assert (reply.status, reply.body) == (200, {"ok": True})
    assert reply.headers["x-upstream"] == "yes"
    assert "keep-alive" not in {k.lower() for k in reply.headers}
    assert reply.headers["server"] != "raw"  # the gateway's own server writes its headers
    sent = _headers(raw.requests[0])
    assert raw.requests[0].startswith(b"GET /v1/items/i1?name=n HTTP/1.1\r\n")
    assert sent["authorization"] == ["Bearer abc"]
    assert sent["traceparent"] == ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]
    assert sent["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert sent["x-forwarded-proto"] == ["http"]
    assert sent["x-forwarded-host"] == sent["host"]
    assert sent["x-request-id"] == [reply.headers["x-request-id"]]
    assert sent["grpc-timeout"] == ["30000m"]  # KEEL_EDGE_TIMEOUT's default
    assert sent["x-custom"] == ["kept"]
    for hop in ("connection", "x-secret", "keep-alive", "te", "upgrade", "proxy-authorization"):
        assert hop not in sent, hop
    assert "grpc-metadata-x-keel-subject" not in sent


async def test_a_post_body_goes_through_within_the_limit(generated: Path) -> None:
    raw = Raw([_ok()])
    async with _raw_front(generated, raw) as url:
        ok = await call(f"{url}/v1/star/s1", "POST", {"name": "n"})
        large = await call(f"{url}/v1/star/s1", "POST", b"x" * ((1 << 20) + 1))
    assert ok.status == 200
    assert raw.requests[0].endswith(b'\r\n\r\n{"name": "n"}')
    assert _headers(raw.requests[0])["content-length"] == ["13"]
    assert large.status == 413
    assert len(raw.requests) == 1


async def test_a_reused_connection_that_breaks_is_retried_when_safe(generated: Path) -> None:
    # Each connection answers one request, then closes as the next one arrives: the second
    # request of a kept-alive connection fails before any byte of its answer.
    raw = Raw([_ok(), _hang_up, _ok(), _hang_up, _ok(), _hang_up, _ok()])
    async with _raw_front(generated, raw) as url:
        assert (await call(f"{url}/v1/items/i1")).status == 200  # connection 1
        assert (await call(f"{url}/v1/items/i1")).status == 200  # 1 breaks; retried on 2
        post = await call(f"{url}/v1/items/i1:archive", "POST", {"count": 1})  # 2 breaks
        assert post.status == 502, post  # a POST is not sent again: it may have run
        assert post.body["code"] == 14  # type: ignore[index]
        keyed = await call(f"{url}/v1/items/i1:archive", "POST", {}, {"idempotency-key": "k1"})
        assert keyed.status == 200  # (connection 3: a new one, nothing to retry)
        retried = await call(f"{url}/v1/items/i1:archive", "POST", {}, {"idempotency-key": "k2"})
        assert retried.status == 200  # 3 breaks; with a key the POST is sent again, on 4
    assert raw.connections == 4
    assert len(raw.requests) == 7


async def test_an_answer_cut_short_is_cut_short_for_the_client(generated: Path) -> None:
    async def half(head: bytes, reader: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"par')
        await writer.drain()
        return False

    raw = Raw([half, _hang_up])
    async with _raw_front(generated, raw) as url:

        def read() -> tuple[int, bytes | str]:
            host, port = url.removeprefix("http://").split(":")
            connection = http.client.HTTPConnection(host, int(port), timeout=WAIT)
            try:
                connection.request("GET", "/v1/items/i1")
                response = connection.getresponse()
                try:
                    return response.status, response.read()
                except http.client.IncompleteRead as error:
                    return response.status, f"incomplete after {len(error.partial)} bytes"
            finally:
                connection.close()

        assert await asyncio.to_thread(read) == (200, "incomplete after 5 bytes")
        refused = await call(f"{url}/v1/items/i1")  # a new connection closed unanswered
    assert refused.status == 502
    assert refused.body["code"] == 14  # type: ignore[index]


async def test_a_chunked_answer_is_relayed_as_it_comes(generated: Path) -> None:
    second = asyncio.Event()

    async def chunked(head: bytes, reader: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\none\n\r\n")
        await writer.drain()
        await second.wait()  # until the client has the first chunk
        writer.write(b"4\r\ntwo\n\r\n0\r\n\r\n")
        await writer.drain()
        return True

    raw = Raw([chunked])
    async with _raw_front(generated, raw) as url:

        def read() -> list[bytes]:
            host, port = url.removeprefix("http://").split(":")
            connection = http.client.HTTPConnection(host, int(port), timeout=WAIT)
            try:
                connection.request("GET", "/v1/items/i1")
                response = connection.getresponse()
                first = response.readline()
                loop.call_soon_threadsafe(second.set)
                return [first, response.read()]
            finally:
                connection.close()

        loop = asyncio.get_running_loop()
        assert await asyncio.to_thread(read) == [b"one\n", b"two\n"]
