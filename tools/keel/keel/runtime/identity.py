"""The verified caller: the end user's bearer token (a JWT), checked by every service.

The gateway verifies the user's token and forwards it unchanged (`authorization` metadata);
every service verifies it again with the same keys (KEEL_JWT_SECRET, or KEEL_JWKS_FILE /
KEEL_JWKS_URL, with KEEL_JWT_AUDIENCE / KEEL_JWT_ISSUER), and generated clients pass it on to
the calls made while handling the call. `keel.Context.subject` and `claims` then come from the
token alone. With keys configured, a call is refused with UNAUTHENTICATED when its token does
not verify (expired, badly signed, wrong audience), or when it claims an identity
(`x-keel-subject`, `x-keel-claims`) that its token does not prove. A call with neither token
nor claimed identity (a service's own work, outside any user's request) is served, with no
subject, unless the method's proto policy (its own, else its service's) asks for a user: a
method so marked `ACCESS_AUTHENTICATED` or with `scopes` is refused UNAUTHENTICATED without a
token, and
PERMISSION_DENIED (ErrorInfo reason MISSING_SCOPE) when the token lacks a listed scope, so its
rule holds behind the gateway too. Without keys (development) nothing is verified: the
identity headers are read as they come.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from keel.errors import PermissionDenied, Unauthenticated
from keel.runtime.config import ConfigError, Settings
from keel.runtime.context import AUTHORIZATION_HEADER, CLAIMS_HEADER, SUBJECT_HEADER
from keel.runtime.spec import Access, AuthPolicy, MethodSpec, ServiceSpec

if TYPE_CHECKING:
    from keel.runtime.context import Context

HMAC = ["HS256", "HS384", "HS512"]
_CACHED = 4096
"""Tokens whose verification a verifier remembers (until they expire)."""


class TokenVerifier:
    """Verifies JWTs with the keys from settings (a secret, a JWKS file or URL); `exp` required.

    A token that verified once is remembered until its `exp` (plus `leeway`), so a token
    forwarded along a chain of calls costs each process one signature check.
    """

    def __init__(self, settings: Settings, *, leeway: float = 0.0) -> None:
        self.audience = settings.jwt_audience or None
        self.issuer = settings.jwt_issuer or None
        self.leeway = leeway
        self._secret = settings.jwt_secret
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_client: jwt.PyJWKClient | None = None
        self._verified: dict[str, dict[str, Any]] = {}
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
        """Whether any key is configured (else nothing can be verified: development)."""
        return bool(self._secret or self._jwks or self._jwks_client)

    def _key(self, token: str) -> tuple[Any, list[str]]:
        """The verification key and the algorithms it may verify (never HMAC with a public key)."""
        if self._secret:
            return self._secret, HMAC
        kid = jwt.get_unverified_header(token).get("kid")
        if self._jwks is not None:
            for key in self._jwks.keys:
                if kid is None or key.key_id == kid:
                    return key.key, [key.algorithm_name]
            raise jwt.InvalidTokenError(f"no key with kid {kid!r}")
        if self._jwks_client is None:
            raise jwt.InvalidTokenError("no keys are configured")
        found = self._jwks_client.get_signing_key_from_jwt(token)
        return found.key, [found.algorithm_name]

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; jwt.InvalidTokenError (or ValueError, TypeError) if it fails."""
        known = self._verified.get(token)
        if known is not None:
            if known["exp"] + self.leeway >= time.time():
                return known
            del self._verified[token]
            raise jwt.ExpiredSignatureError("Signature has expired")
        key, algorithms = self._key(token)
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=self.audience,
            issuer=self.issuer,
            leeway=self.leeway,
            options={"require": ["exp"]},
        )
        if len(self._verified) >= _CACHED:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = claims
        return claims


def bearer(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (None if not a bearer value)."""
    if authorization[:7].lower() != "bearer ":
        return None
    return authorization[7:].strip() or None


def policy(method: MethodSpec[Any, Any], service: ServiceSpec) -> AuthPolicy:
    """The auth policy that applies to `method`: its own, else its service's."""
    return method.auth or service.auth or AuthPolicy()


def granted_scopes(claims: dict[str, Any]) -> set[str]:
    """The scopes a token grants: its `scope` claim (space-separated) and `scp` (a list)."""
    scope = claims.get("scope", "")
    listed = claims.get("scp", [])
    found = set(scope.split()) if isinstance(scope, str) else set()
    if isinstance(listed, list):
        found |= {str(s) for s in listed}
    return found


def _refused(message: str, reason: str) -> Unauthenticated:
    return Unauthenticated(message, reason=reason, domain="keel")


class CallerCheck:
    """A service's check of the caller of every call (only made when keys are configured).

    `for_policy` gives the check of one method: the same verifier, plus the method's rule.
    """

    def __init__(self, verifier: TokenVerifier, rule: AuthPolicy | None = None) -> None:
        self.verifier = verifier
        self.rule = rule or AuthPolicy()
        self._user_required = self.rule.access is Access.AUTHENTICATED or bool(self.rule.scopes)

    def for_policy(self, rule: AuthPolicy) -> CallerCheck:
        """This check for a method whose proto policy is `rule`."""
        return CallerCheck(self.verifier, rule)

    @classmethod
    def from_settings(cls, settings: Settings) -> CallerCheck | None:
        """The check for these settings' keys; None without keys (nothing to verify)."""
        verifier = TokenVerifier(settings, leeway=settings.jwt_leeway)
        return cls(verifier) if verifier.configured else None

    def admit(self, call: Context) -> None:
        """Verify the identity `call` carries and give it to the call's keel.Context, or raise
        Unauthenticated (ErrorInfo reason INVALID_TOKEN or UNVERIFIED_IDENTITY, domain keel)."""
        authorization = subject = claims_text = None
        for key, value in call.metadata:
            if not isinstance(value, str):
                continue
            if key == AUTHORIZATION_HEADER:
                if authorization is not None:
                    raise _refused("the call has more than one authorization", "INVALID_TOKEN")
                authorization = value
            elif key == SUBJECT_HEADER:
                subject = value
            elif key == CLAIMS_HEADER:
                claims_text = value
        if authorization is None:
            if subject is not None or claims_text is not None:
                raise _refused(
                    "the call claims an identity without a bearer token to prove it",
                    "UNVERIFIED_IDENTITY",
                )
            if self._user_required:
                raise _refused("this method needs a bearer token", "TOKEN_REQUIRED")
            return  # no user: a service's own call
        token = bearer(authorization)
        if token is None:
            raise _refused("authorization must be a bearer token", "INVALID_TOKEN")
        try:
            claims = self.verifier.verify(token)
        except (jwt.PyJWTError, ValueError, TypeError) as error:
            raise _refused(f"the bearer token is not valid: {error}", "INVALID_TOKEN") from None
        if subject is not None and subject != str(claims.get("sub", "")):
            raise _refused("x-keel-subject is not the token's subject", "UNVERIFIED_IDENTITY")
        if claims_text is not None and _parsed(claims_text) != claims:
            raise _refused("x-keel-claims are not the token's claims", "UNVERIFIED_IDENTITY")
        if self.rule.scopes:
            missing = sorted(set(self.rule.scopes) - granted_scopes(claims))
            if missing:
                raise PermissionDenied(
                    f"the token lacks the scope {' '.join(missing)}",
                    reason="MISSING_SCOPE",
                    domain="keel",
                    metadata={"scopes": " ".join(missing)},
                )
        call.adopt_caller(claims)


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
