"""Declarations that generated code hands to the runtime: one ServiceSpec per proto service."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)


class RpcKind(enum.Enum):
    """The four gRPC call shapes."""

    UNARY_UNARY = "unary_unary"
    UNARY_STREAM = "unary_stream"
    STREAM_UNARY = "stream_unary"
    STREAM_STREAM = "stream_stream"

    @property
    def client_streaming(self) -> bool:
        return self in (RpcKind.STREAM_UNARY, RpcKind.STREAM_STREAM)

    @property
    def server_streaming(self) -> bool:
        return self in (RpcKind.UNARY_STREAM, RpcKind.STREAM_STREAM)


class Idempotency(enum.Enum):
    """`google.protobuf.MethodOptions.idempotency_level`; only the last two may be retried."""

    UNKNOWN = "IDEMPOTENCY_UNKNOWN"
    NO_SIDE_EFFECTS = "NO_SIDE_EFFECTS"
    IDEMPOTENT = "IDEMPOTENT"

    @property
    def retryable(self) -> bool:
        return self is not Idempotency.UNKNOWN


class Access(enum.Enum):
    """`keel.options.v1.Access`: who may call a method through the REST gateway."""

    UNSPECIFIED = "ACCESS_UNSPECIFIED"
    PUBLIC = "ACCESS_PUBLIC"
    AUTHENTICATED = "ACCESS_AUTHENTICATED"


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """`keel.options.v1.AuthPolicy` of a method or service."""

    access: Access = Access.UNSPECIFIED
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HttpRule:
    """One `google.api.http` binding (the main rule or one of its `additional_bindings`).

    `method` is the HTTP verb (`GET`, `POST`, ... or a custom verb's kind), `path` the URL template
    as written in the proto, `body` is "", "*" or a request field name, and `response_body` is ""
    or a response field name.
    """

    method: str
    path: str
    body: str = ""
    response_body: str = ""


@dataclass(frozen=True, slots=True)
class MethodSpec(Generic[RequestT, ResponseT]):
    """Everything the runtime, the client and the gateway need to know about one rpc."""

    name: str
    python_name: str
    service: str
    kind: RpcKind
    request_type: type[RequestT]
    response_type: type[ResponseT]
    idempotency: Idempotency = Idempotency.UNKNOWN
    http: tuple[HttpRule, ...] = ()
    timeout: float | None = None
    auth: AuthPolicy | None = None

    @property
    def path(self) -> str:
        """The gRPC method path, `/package.Service/Method`."""
        return f"/{self.service}/{self.name}"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A proto service: its full name, the file that declares it, its methods and defaults."""

    name: str
    file: str
    methods: tuple[MethodSpec[Any, Any], ...]
    default_timeout: float | None = None
    auth: AuthPolicy | None = None

    def method(self, name: str) -> MethodSpec[Any, Any]:
        """The method called `name` (its proto name), or KeyError."""
        for method in self.methods:
            if method.name == name:
                return method
        raise KeyError(f"{self.name} has no method {name!r}")
