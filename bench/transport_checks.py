"""What a Keel service needs from its transport, checked on a running server with grpcio's client.

Each check makes real calls to the echo/probe services on 127.0.0.1:PORT and answers "ok" or
what went wrong. grpcurl is not in Debian 12, so reflection is checked with grpcio-reflection's
client (the same ServerReflectionInfo stream grpcurl uses). `deadline-server` sends a raw HTTP/2
request with `grpc-timeout: 200m` and no client-side deadline (the h2 library), so only the
server can end it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc.aio
import h2.connection
import h2.events
from echo.v1 import echo_pb2, echo_pb2_grpc, probe_pb2_grpc
from echo.v1.probe_pb2 import ProbeRequest as Probe
from google.protobuf import descriptor_pool
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

CHECKS = (
    "unary",
    "health",
    "reflection",
    "deadline-client",
    "deadline-server",
    "retries",
    "server-stream",
    "client-stream",
    "bidi-full-duplex",
    "metadata+trailers",
    "status-details",
    "large-message-4MiB",
    "100-concurrent",
    "keepalive-pings",
    "2000-calls-1-connection",
)
RETRY = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "echo.v1.ProbeService"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.05s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["FAILED_PRECONDITION"],
                },
            }
        ]
    }
)
MIB = 1024 * 1024


async def _unary(channel: grpc.aio.Channel) -> str:
    reply = await echo_pb2_grpc.EchoServiceStub(channel).Echo(
        echo_pb2.EchoRequest(text="x"), timeout=5
    )
    return "ok" if reply.text == "x" else f"wrong reply {reply.text!r}"


async def _health(channel: grpc.aio.Channel) -> str:
    stub: Any = health_pb2_grpc.HealthStub(channel)
    for name in ("", "echo.v1.EchoService"):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return f"{name or 'server'}: {reply.status}"
    return "ok"


def _reflection(port: int) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        if "echo.v1.EchoService" not in services:
            return f"services listed: {services}"
        pool = descriptor_pool.DescriptorPool(database)
        try:
            method = pool.FindServiceByName("echo.v1.ProbeService").FindMethodByName("Chat")
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"
        return "ok" if method.client_streaming and method.server_streaming else "wrong method"


async def _deadline_client(channel: grpc.aio.Channel) -> str:
    began = time.monotonic()
    try:
        await probe_pb2_grpc.ProbeServiceStub(channel).Probe(Probe(delay_ms=3000), timeout=0.2)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"{error.code().name}: {error.details()}"
        return "ok" if time.monotonic() - began < 1.5 else "late"
    return "answered past its deadline"


def _deadline_server(port: int) -> str:
    """grpc-timeout 200m, a 3 s handler, no client deadline: the server must end the call."""
    message = Probe(delay_ms=3000).SerializeToString()
    frame = b"\x00" + struct.pack(">I", len(message)) + message
    connection = h2.connection.H2Connection()
    connection.initiate_connection()
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=2.5) as sock:
        connection.send_headers(
            1,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", f"127.0.0.1:{port}"),
                (":path", "/echo.v1.ProbeService/Probe"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-timeout", "200m"),
            ],
        )
        connection.send_data(1, frame, end_stream=True)
        sock.sendall(connection.data_to_send())
        headers: dict[str, str] = {}
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                        headers.update((k.decode(), v.decode()) for k, v in event.headers)
                    if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        raise StopIteration
                sock.sendall(connection.data_to_send())
        except StopIteration:
            pass
        except TimeoutError:
            return "no answer after 2.5 s: grpc-timeout ignored"
    took = time.monotonic() - began
    status = headers.get("grpc-status")
    if status != "4":
        return f"grpc-status {status} after {took:.2f} s"
    return "ok" if took < 1.5 else f"DEADLINE_EXCEEDED only after {took:.2f} s"


async def _retries(port: int) -> str:
    options = [("grpc.service_config", RETRY), ("grpc.enable_retries", 1)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        try:
            await probe_pb2_grpc.ProbeServiceStub(channel).Probe(Probe(fail=True), timeout=5)
        except grpc.aio.AioRpcError as error:
            details = error.details() or ""
            return "ok" if "attempt 2" in details else f"{error.code().name}: {details}"
    return "no error"


async def _server_stream(channel: grpc.aio.Channel) -> str:
    call = probe_pb2_grpc.ProbeServiceStub(channel).Fan(Probe(text="n", count=3), timeout=5)
    texts = [reply.text async for reply in call]
    return "ok" if texts == ["n0", "n1", "n2"] else f"got {texts}"


async def _client_stream(channel: grpc.aio.Channel) -> str:
    async def requests() -> AsyncIterator[Probe]:
        for text in ("a", "b", "c"):
            yield Probe(text=text)

    reply = await probe_pb2_grpc.ProbeServiceStub(channel).Gather(requests(), timeout=5)
    return "ok" if reply.text == "a,b,c" else f"got {reply.text!r}"


async def _bidi(channel: grpc.aio.Channel) -> str:
    """Each reply read before the next request is sent: only a full-duplex transport passes."""
    call = probe_pb2_grpc.ProbeServiceStub(channel).Chat(timeout=5)
    for text in ("a", "b", "c"):
        await call.write(Probe(text=text))
        reply = await call.read()
        if reply.text != text.upper():
            return f"got {reply!r} for {text}"
    await call.done_writing()
    return "ok" if await call.read() == grpc.aio.EOF else "no end"


async def _metadata(channel: grpc.aio.Channel) -> str:
    call = probe_pb2_grpc.ProbeServiceStub(channel).Probe(
        Probe(text="m"), metadata=(("x-probe", "tag"),), timeout=5
    )
    await call
    header = dict(await call.initial_metadata() or ()).get("x-probe-header")
    trailer = dict(await call.trailing_metadata() or ()).get("x-probe-trailer")
    return "ok" if (header, trailer) == ("tag", "tag") else f"header {header}, trailer {trailer}"


async def _details(channel: grpc.aio.Channel) -> str:
    call = probe_pb2_grpc.ProbeServiceStub(channel).Probe(Probe(fail=True), timeout=5)
    try:
        await call
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
            return f"{error.code().name}: {error.details()}"
        trailers = dict(error.trailing_metadata() or ())
        if "grpc-status-details-bin" not in trailers:
            return "no grpc-status-details-bin"
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        info = error_details_pb2.ErrorInfo()
        ok = len(status.details) == 1 and status.details[0].Unpack(info)
        return "ok" if ok and info.reason == "PROBE" else f"details {status.details}"
    return "no error"


async def _large(channel: grpc.aio.Channel) -> str:
    text = "x" * (4 * MIB - 64)  # just under gRPC's default 4 MiB receive limit
    reply = await echo_pb2_grpc.EchoServiceStub(channel).Echo(
        echo_pb2.EchoRequest(text=text), timeout=20
    )
    return "ok" if reply.text == text else "wrong reply"


async def _concurrent(channel: grpc.aio.Channel) -> str:
    stub = echo_pb2_grpc.EchoServiceStub(channel)
    replies = await asyncio.gather(
        *(stub.Echo(echo_pb2.EchoRequest(text=str(n)), timeout=10) for n in range(100)),
        return_exceptions=True,
    )
    bad = [r for r in replies if not isinstance(r, echo_pb2.EchoResponse)]
    if not bad:
        return "ok"
    first = bad[0]
    what = (
        f"{first.code().name}: {first.details()}"
        if isinstance(first, grpc.aio.AioRpcError)
        else repr(first)
    )
    return f"{len(bad)} of 100 failed: {what[:160]}"


async def _sustained(channel: grpc.aio.Channel) -> str:
    """2000 calls, 20 at a time, on one connection, each with a 3 s deadline."""
    stub = echo_pb2_grpc.EchoServiceStub(channel)
    failed: list[BaseException] = []
    for _ in range(100):
        replies = await asyncio.gather(
            *(stub.Echo(echo_pb2.EchoRequest(text="s"), timeout=3) for _ in range(20)),
            return_exceptions=True,
        )
        failed += [r for r in replies if isinstance(r, BaseException)]
        if len(failed) >= 20:
            break
    if not failed:
        return "ok"
    first = failed[0]
    what = (
        f"{first.code().name}: {first.details()}"
        if isinstance(first, grpc.aio.AioRpcError)
        else repr(first)
    )
    return f"{len(failed)} failed: {what[:160]}"


async def _keepalive(port: int) -> str:
    """Client pings every 200 ms on an idle connection, then calls: the call must work."""
    options = [
        ("grpc.keepalive_time_ms", 200),
        ("grpc.keepalive_timeout_ms", 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        await _unary(channel)
        await asyncio.sleep(1.5)  # the pings are the point: an idle connection for 7 of them
        return await _unary(channel)


async def run_checks(port: int, timeout: float = 10) -> dict[str, str]:
    """Every check against the server on `port`, each on a new connection: check name -> "ok"
    or what failed (a check that takes longer than `timeout` seconds fails)."""
    on_channel: dict[str, Callable[[grpc.aio.Channel], Awaitable[str]]] = {
        "unary": _unary,
        "health": _health,
        "deadline-client": _deadline_client,
        "server-stream": _server_stream,
        "client-stream": _client_stream,
        "bidi-full-duplex": _bidi,
        "metadata+trailers": _metadata,
        "status-details": _details,
        "large-message-4MiB": _large,
        "100-concurrent": _concurrent,
        "2000-calls-1-connection": _sustained,
    }
    on_port: dict[str, Callable[[int], Awaitable[str]]] = {
        "reflection": lambda p: asyncio.to_thread(_reflection, p),
        "deadline-server": lambda p: asyncio.to_thread(_deadline_server, p),
        "retries": _retries,
        "keepalive-pings": _keepalive,
    }
    results: dict[str, str] = {}
    for name in CHECKS:
        try:
            if name in on_port:
                outcome = await asyncio.wait_for(on_port[name](port), timeout)
            else:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    outcome = await asyncio.wait_for(on_channel[name](channel), timeout)
        except grpc.aio.AioRpcError as error:
            outcome = f"{error.code().name}: {(error.details() or '')[:160]}"
        except Exception as error:  # what failed is the check.s answer
            outcome = f"{type(error).__name__}: {str(error)[:160]}"
        results[name] = outcome.replace("\n", " ")
    return results
