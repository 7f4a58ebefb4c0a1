"""Authentication at the edge: JWT bearer tokens (pyjwt), per-method policy from the protos.

Policy: the method's `keel.options.v1.method` auth, else its service's. ACCESS_PUBLIC (without
scopes) lets anyone through. Anything else needs a valid token once keys are configured, and
every listed scope (`scope` claim, space-separated, or `scp`, a list). With no keys configured
(local development) the gateway warns at start-up and lets calls through unauthenticated.
Verified claims reach services as metadata: `x-keel-subject` (the `sub`) and `x-keel-claims`
(the claims as JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt

from keel.runtime.config import ConfigError, Settings
from keel.runtime.spec import Access, AuthPolicy, MethodSpec, ServiceSpec


class DeniedError(Exception):
    """The request may not call the method: 401 (no or bad token) or 403 (missing scope)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def challenge(self) -> str:
        """The `WWW-Authenticate` header value (RFC 6750)."""
        return f'Bearer realm="keel", error="{self.error}", error_description="{self.description}"'


def policy(method: MethodSpec[Any, Any], service: ServiceSpec) -> AuthPolicy:
    """The auth policy that applies to `method`."""
    return method.auth or service.auth or AuthPolicy()


def _scopes(claims: dict[str, Any]) -> set[str]:
    scope = claims.get("scope", "")
    listed = claims.get("scp", [])
    found = set(scope.split()) if isinstance(scope, str) else set()
    if isinstance(listed, list):
        found |= {str(s) for s in listed}
    return found


class Authenticator:
    """Verifies bearer tokens with the keys from settings (a secret, a JWKS file or URL)."""

    def __init__(self, settings: Settings) -> None:
        self.audience = settings.jwt_audience or None
        self.issuer = settings.jwt_issuer or None
        self._secret = settings.jwt_secret
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_client: jwt.PyJWKClient | None = None
        if settings.jwks_file:
            try:
                self._jwks = jwt.PyJWKSet.from_dict(
                    json.loads(Path(settings.jwks_file).read_text())
                )
            except (OSError, ValueError, jwt.PyJWKSetError) as error:
                raise ConfigError(f"KEEL_JWKS_FILE={settings.jwks_file!r}: {error}") from None
        if settings.jwks_url:
            self._jwks_client = jwt.PyJWKClient(settings.jwks_url)

    @property
    def configured(self) -> bool:
        """Whether any key is configured (else calls pass unauthenticated: development)."""
        return bool(self._secret or self._jwks or self._jwks_client)

    def _key(self, token: str) -> tuple[Any, list[str]]:
        """The verification key and the algorithms it may verify (never HMAC with a public key)."""
        if self._secret:
            return self._secret, ["HS256", "HS384", "HS512"]
        kid = jwt.get_unverified_header(token).get("kid")
        if self._jwks is not None:
            for key in self._jwks.keys:
                if kid is None or key.key_id == kid:
                    return key.key, [key.algorithm_name]
            raise jwt.InvalidTokenError(f"no key with kid {kid!r}")
        if self._jwks_client is None:  # pragma: no cover (configured() guards this)
            raise jwt.InvalidTokenError("no keys")
        found = self._jwks_client.get_signing_key_from_jwt(token)
        return found.key, [found.algorithm_name]

    def check(self, rule: AuthPolicy, authorization: str | None) -> dict[str, Any] | None:
        """The verified claims (None when no check applies), or DeniedError."""
        if rule.access is Access.PUBLIC and not rule.scopes:
            return None
        if not self.configured:
            return None
        if not authorization or not authorization.lower().startswith("bearer "):
            raise DeniedError(401, "invalid_request", "a bearer token is required")
        token = authorization[7:].strip()
        try:
            key, algorithms = self._key(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError) as error:
            raise DeniedError(401, "invalid_token", str(error).replace('"', "'")) from None
        missing = sorted(set(rule.scopes) - _scopes(claims))
        if missing:
            raise DeniedError(403, "insufficient_scope", f"missing scope {' '.join(missing)}")
        return claims
