"""Channels for generated clients: retries for idempotent methods, round-robin balancing.

Retries use gRPC's native retry policy (service config), so they are bounded by the call's
deadline, back off exponentially with jitter, and honour the server's pushback: Keel servers
send `grpc-retry-pushback-ms` from a RetryInfo detail, and `-1` (do not retry) for
RESOURCE_EXHAUSTED without one. Only methods whose proto says `idempotency_level =
NO_SIDE_EFFECTS` or `IDEMPOTENT` get a retry policy, and unary methods marked
`(keel.options.v1.method) = {idempotency_key: true}`: the client sends those an idempotency key
that every attempt repeats (native retries resend the call's metadata), so the service does it
once. The rest are never retried.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from keel.options.v1 import options_pb2
from keel.runtime.config import Settings
from keel.runtime.spec import Idempotency, MethodSpec, RpcKind, ServiceSpec

RETRYABLE_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
IDEMPOTENCY_KEY = "idempotency-key"
"""The gRPC metadata key of a call's idempotency key (`Idempotency-Key` at the gateway)."""


_MARKED: dict[str, bool] = {}


def _marked(path: str, request_type: Any) -> bool:
    found = _MARKED.get(path)
    if found is None:
        try:
            pool = request_type.DESCRIPTOR.file.pool
            descriptor = pool.FindMethodByName(path.strip("/").replace("/", "."))
            keel = descriptor.GetOptions().Extensions[options_pb2.method]
            found = _MARKED[path] = bool(keel.idempotency_key)
        except (KeyError, AttributeError):
            found = _MARKED[path] = False
    return found


def takes_key(spec: MethodSpec[Any, Any]) -> bool:
    """Whether calls of `spec` carry an idempotency key: a unary method whose idempotency_level
    is unset and whose proto says `(keel.options.v1.method) = {idempotency_key: true}`."""
    return (
        spec.kind is RpcKind.UNARY_UNARY
        and spec.idempotency is Idempotency.UNKNOWN
        and _marked(spec.path, spec.request_type)
    )


def service_config(spec: ServiceSpec, settings: Settings) -> dict[str, Any]:
    """The gRPC service config for a channel to `spec`'s service."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    retryable = [m for m in spec.methods if m.idempotency.retryable or takes_key(m)]
    if retryable and settings.retry_max_attempts > 1:
        config["methodConfig"] = [
            {
                "name": [{"service": spec.name, "method": m.name} for m in retryable],
                "retryPolicy": {
                    "maxAttempts": settings.retry_max_attempts,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": list(RETRYABLE_CODES),
                },
            }
        ]
    return config


def open_channel(
    target: str,
    spec: ServiceSpec,
    settings: Settings,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A channel to `target` configured for `spec`'s service, through `interceptors` if any."""
    all_options = [
        ("grpc.service_config", json.dumps(service_config(spec, settings))),
        ("grpc.enable_retries", 1),
        *options,
    ]
    chain = list(interceptors) or None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=all_options, interceptors=chain)
    return grpc.aio.secure_channel(target, credentials, options=all_options, interceptors=chain)
