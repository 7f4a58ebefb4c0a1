"""Authentication at the edge: JWT bearer tokens (pyjwt), per-method policy from the protos.

Policy: the method's `keel.options.v1.method` auth, else its service's. ACCESS_PUBLIC (without
scopes) lets anyone through. Anything else needs a valid token once keys are configured, and
every listed scope (`scope` claim, space-separated, or `scp`, a list). With no keys configured
(local development) the gateway warns at start-up and lets calls through unauthenticated.
The verified token goes on to the service as `authorization` metadata, which services verify
again (keel.runtime.identity); `x-keel-subject` (the `sub`) and `x-keel-claims` (the claims
as JSON) go with it, and services refuse them unless they are the token's.
"""

from __future__ import annotations

from typing import Any

import jwt

from keel.runtime.config import Settings
from keel.runtime.identity import TokenVerifier, granted_scopes, policy
from keel.runtime.spec import Access, AuthPolicy

__all__ = ["Authenticator", "DeniedError", "policy"]


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


class Authenticator:
    """Verifies bearer tokens with the keys from settings (a secret, a JWKS file or URL)."""

    def __init__(self, settings: Settings) -> None:
        self.verifier = TokenVerifier(settings)

    @property
    def configured(self) -> bool:
        """Whether any key is configured (else calls pass unauthenticated: development)."""
        return self.verifier.configured

    def check(self, rule: AuthPolicy, authorization: str | None) -> dict[str, Any] | None:
        """The verified claims (None when no token is needed and none was sent), or DeniedError.

        A token sent to a public method is verified too: services verify every token they
        receive, so the edge refuses a bad one as they would.
        """
        public = rule.access is Access.PUBLIC and not rule.scopes
        if not self.configured or (public and not authorization):
            return None
        if not authorization or not authorization.lower().startswith("bearer "):
            raise DeniedError(401, "invalid_request", "a bearer token is required")
        token = authorization[7:].strip()
        try:
            claims = self.verifier.verify(token)
        except (jwt.PyJWTError, ValueError, TypeError) as error:
            raise DeniedError(401, "invalid_token", str(error).replace('"', "'")) from None
        missing = sorted(set(rule.scopes) - granted_scopes(claims))
        if missing:
            raise DeniedError(403, "insufficient_scope", f"missing scope {' '.join(missing)}")
        return claims
