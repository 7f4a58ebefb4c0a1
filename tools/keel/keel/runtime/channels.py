"""Channels for generated clients: retries for idempotent methods, round-robin balancing.

Retries use gRPC's native retry policy (service config), so they are bounded by the call's
deadline, back off exponentially with jitter, and honour the server's pushback: Keel servers
send `grpc-retry-pushback-ms` from a RetryInfo detail, and `-1` (do not retry) for
RESOURCE_EXHAUSTED without one. Only methods whose proto says `idempotency_level =
NO_SIDE_EFFECTS` or `IDEMPOTENT` get a retry policy; the rest are never retried.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from keel.runtime.config import Settings
from keel.runtime.spec import ServiceSpec

RETRYABLE_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")


def service_config(spec: ServiceSpec, settings: Settings) -> dict[str, Any]:
    """The gRPC service config for a channel to `spec`'s service."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    retryable = [m for m in spec.methods if m.idempotency.retryable]
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
