"""Who may make a request: authentication (per-method policy from the protos), then rate limits."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from keel.gateway import status
from keel.gateway.auth import Authenticator, DeniedError, policy
from keel.gateway.edge import RateLimiter
from keel.gateway.routes import Match
from keel.runtime.config import Settings
from keel.runtime.context import CLAIMS_HEADER, SUBJECT_HEADER
from keel.runtime.spec import ServiceSpec

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Refusal:
    """The answer to a request that is not admitted."""

    status: int
    body: bytes
    headers: Headers = field(default_factory=list)


class Admitted:
    """A request let in, with the verified claims of its token (None without one)."""

    __slots__ = ("claims", "subject")

    def __init__(self, claims: dict[str, Any] | None) -> None:
        self.claims = claims
        self.subject = str(claims.get("sub", "")) if claims else ""
        """The verified user (the token's `sub`), or ""."""

    def metadata(self) -> list[tuple[str, str]]:
        """The verified caller as gRPC metadata (clients can never send these themselves):
        copies of the token's `sub` and claims, which services check against the token that
        goes with them (keel.runtime.identity)."""
        if self.claims is None:
            return []
        claims = json.dumps(self.claims, separators=(",", ":"))
        return [(SUBJECT_HEADER, self.subject), (CLAIMS_HEADER, claims)]


_ANYONE = Admitted(None)


class Admission:
    """Authentication (JWT, per-method policy) and token-bucket rate limits per client and route."""

    def __init__(self, services: Mapping[str, ServiceSpec], settings: Settings) -> None:
        self.services = services
        self.auth = Authenticator(settings)
        self.limiter = (
            RateLimiter(settings.rate_limit, settings.rate_burst) if settings.rate_limit else None
        )
        self._open = self.limiter is None and not self.auth.configured
        """Nothing to check without keys and limits (development), unless a token is sent."""

    def check(
        self, found: Match, authorization: str | None, client: tuple[str, int] | None
    ) -> Admitted | Refusal:
        if self._open and authorization is None:
            return _ANYONE
        method = found.route.method
        try:
            claims = self.auth.check(policy(method, self.services[method.service]), authorization)
        except DeniedError as denied:
            code = grpc.StatusCode.UNAUTHENTICATED
            if denied.status == 403:
                code = grpc.StatusCode.PERMISSION_DENIED
            challenge = [(b"www-authenticate", denied.challenge().encode())]
            return Refusal(denied.status, status.body(code, denied.description), challenge)
        if self.limiter is not None:
            identity = str(claims.get("sub")) if claims else str((client or ("",))[0])
            if not self.limiter.allow(identity, f"{found.route.verb} {found.route.rule.path}"):
                wait = str(self.limiter.retry_after).encode()
                body = status.body(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, "too many requests; slow down"
                )
                return Refusal(429, body, [(b"retry-after", wait)])
        return Admitted(claims)
