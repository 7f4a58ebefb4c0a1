"""What a REST request sends upstream besides its message: metadata and a deadline.

Metadata: the request id, `Authorization`, `Idempotency-Key` as `idempotency-key` (see
keel.idempotency), the trace context (when the gateway does not trace itself), every
`Grpc-Metadata-<key>` header as `<key>`, and `X-Forwarded-For` with the client appended. `-bin`
keys carry base64 in HTTP and bytes in gRPC. The deadline is `Grpc-Timeout`, else the method's,
the service's, then KEEL_EDGE_TIMEOUT; never over KEEL_EDGE_MAX_TIMEOUT.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from keel.gateway.protojson import InputError, decode_base64
from keel.runtime import tracing
from keel.runtime.config import Settings
from keel.runtime.propagation import TRACE_CONTEXT
from keel.runtime.spec import MethodSpec, ServiceSpec

_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_METADATA_KEY = re.compile(r"[0-9a-z_.\-]+")
PREFIX = "grpc-metadata-"
"""The header prefix of metadata a request sends as is (`Grpc-Metadata-<key>`)."""
_SET_BY_THE_GATEWAY = frozenset({"authorization", "x-request-id", "x-forwarded-for"})
"""Metadata the gateway sends from its own headers: a `Grpc-Metadata-` copy would be a second
value (a second token a service refuses, a correlation id or client address of the caller's
choosing)."""
_IDEMPOTENCY_HEADER = "idempotency-key"  # the IETF httpapi draft's header, as gRPC metadata
_IDEMPOTENCY_METADATA = PREFIX + _IDEMPOTENCY_HEADER

Metadata = list[tuple[str, str | bytes]]


def grpc_timeout(value: str) -> float | None:
    """Seconds from a `Grpc-Timeout` header (`5S`, `250m`), None if malformed."""
    match = _TIMEOUT.match(value.strip())
    return None if match is None else int(match[1]) * _UNITS[match[2]]


def _binary(key: str, value: str) -> bytes:
    """A `-bin` header's bytes: base64, standard or URL-safe, padded or not."""
    try:
        return decode_base64(value.strip())
    except ValueError:
        raise InputError(f"header {key!r} must be base64 (a -bin key carries bytes)") from None


def _grpc_metadata(key: str, text: str) -> tuple[str, str | bytes]:
    """The metadata a `Grpc-Metadata-<key>` header carries."""
    name = key.removeprefix(PREFIX)
    if not _METADATA_KEY.fullmatch(name):
        raise InputError(f"header {key!r} cannot travel as gRPC metadata")
    if name in _SET_BY_THE_GATEWAY:
        raise InputError(f"header {key!r}: send {name} as the {name.title()} header itself")
    return (name, _binary(key, text)) if name.endswith("-bin") else (name, text)


def metadata(
    headers: Mapping[str, str],
    client: tuple[str, int] | None,
    trace: bool = False,
    *,
    prefixed: bool = True,
) -> Metadata:
    """The gRPC metadata of a request from its (lower-cased) headers and client address.

    The request's trace context goes on as it came when tracing is off or `trace` is set (no
    span of the edge's own stands between the client and the call). `prefixed=False` says no
    header is a `Grpc-Metadata-` one (the caller saw them all: none is looked for)."""
    text = headers["x-request-id"]  # every text value, concatenated: checked once at the end
    found: Metadata = [("x-request-id", text)]
    if "authorization" in headers:
        value = headers["authorization"]
        found.append(("authorization", value))
        text += value
    if _IDEMPOTENCY_HEADER in headers and _IDEMPOTENCY_METADATA not in headers:
        value = headers[_IDEMPOTENCY_HEADER]
        found.append((_IDEMPOTENCY_HEADER, value))
        text += value
    if ("traceparent" in headers or "tracestate" in headers) and (
        trace or not tracing.enabled()  # else the edge span's own context is sent instead
    ):
        for key in TRACE_CONTEXT:
            if key in headers:
                value = headers[key]
                found.append((key, value))
                text += value
    for key, value in headers.items() if prefixed else ():
        if key.startswith(PREFIX):
            item = _grpc_metadata(key, value)
            found.append(item)
            if isinstance(item[1], str):
                text += item[1]
    forwarded: str | None = headers.get("x-forwarded-for")
    if client:
        forwarded = f"{forwarded}, {client[0]}" if forwarded else client[0]
    if forwarded:
        found.append(("x-forwarded-for", forwarded))
        text += forwarded
    if not (text.isascii() and text.isprintable()):  # printable ASCII (0x20-0x7e) only
        for key, sent in found:
            if isinstance(sent, str) and not (sent.isascii() and sent.isprintable()):
                raise InputError(f"header {key!r} has characters gRPC metadata cannot carry")
    return found


def deadline(
    headers: Mapping[str, str],
    method: MethodSpec[Any, Any],
    service: ServiceSpec,
    settings: Settings,
) -> float:
    """Seconds the upstream call may take."""
    asked = headers.get("grpc-timeout")
    timeout = grpc_timeout(asked) if asked is not None else None
    if asked is not None and timeout is None:
        raise InputError(f"header grpc-timeout {asked!r} is not a gRPC timeout (e.g. 5S, 250m)")
    timeout = timeout or method.timeout or service.default_timeout or settings.edge_timeout
    cap = settings.edge_max_timeout
    return min(timeout, cap) if cap else timeout
