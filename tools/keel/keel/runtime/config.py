"""Settings from the environment (12-factor): every variable starts with `KEEL_`.

| variable | meaning | default |
| --- | --- | --- |
| KEEL_HOST | address the gRPC server binds | 0.0.0.0 |
| KEEL_PORT | gRPC port (0 picks a free one) | 50051 |
| KEEL_METRICS_PORT | Prometheus metrics HTTP port (0 disables) | 9464 |
| KEEL_REST_PORT | port of the service's own REST routes (0: a free one) | off |
| KEEL_LOG_LEVEL | debug, info, warning or error | info |
| KEEL_LOG_FORMAT | json or console (console when stdout is a terminal) | auto |
| KEEL_LOG_CALLS | one log line per call: true or false | true |
| KEEL_GRACE_PERIOD | seconds in-flight calls get to finish on SIGTERM | 30 |
| KEEL_OTLP_ENDPOINT | OTLP/gRPC endpoint for traces (unset: no export) | |
| KEEL_TRACE_SAMPLE_RATIO | share of new traces recorded; a caller's sampled trace always is | 0.1 |
| KEEL_TRACE_RATE_LIMIT | new traces recorded a second, at most, per process (0: no limit) | 100 |
| KEEL_WORKERS | server processes sharing the port | 1 |
| KEEL_DEFAULT_TIMEOUT | deadline of client calls with none in the proto or the call | 10 |
| KEEL_RETRY_MAX_ATTEMPTS | attempts of an idempotent call (1 = no retry, at most 5) | 4 |
| KEEL_BREAKER_THRESHOLD | failures in a row that open a target's circuit | 5 |
| KEEL_BREAKER_RESET | seconds an open circuit waits before a probe | 30 |
| KEEL_REGISTRY | service registry file | services/registry.toml, found upwards |
| KEEL_JWT_SECRET | gateway and services: HS256 shared secret for bearer tokens | |
| KEEL_JWKS_FILE / KEEL_JWKS_URL | gateway and services: JSON Web Key Set (RS256, ES256, ...) | |
| KEEL_JWT_AUDIENCE / KEEL_JWT_ISSUER | gateway and services: required `aud` / `iss` of tokens | |
| KEEL_JWT_LEEWAY | services: seconds a forwarded token stays valid past its `exp` | 30 |
| KEEL_RATE_LIMIT | gateway: requests a second per client and route (0: off) | 0 |
| KEEL_RATE_BURST | gateway: requests a client may make at once | 20 |
| KEEL_CORS_ORIGINS | gateway: allowed origins, comma-separated, or * | |
| KEEL_EDGE_TIMEOUT | gateway: deadline when neither Grpc-Timeout nor the proto sets one | 30 |
| KEEL_EDGE_MAX_TIMEOUT | gateway: the longest deadline any request gets (0: no cap) | 0 |
| KEEL_GATEWAY_UPSTREAM | gateway: auto (a service's REST port when known), grpc or rest | auto |
| KEEL_DATABASE_URL | the service's database (SQLAlchemy async URL) | SQLite in KEEL_STATE_DIR |
| KEEL_STATE_DIR | the service's local state (its default SQLite file) | .keel/state/<service> |
| KEEL_MIGRATE | apply pending migrations at start-up: true or false | false (`keel dev`: true) |
| KEEL_NATS_URL | NATS server of the event broker (nats://host:port) | |
| KEEL_EVENTS_DUPLICATE_WINDOW | seconds JetStream drops a repeated event id | 120 |
| KEEL_EVENTS_ACK_WAIT | seconds a delivery may take before the broker redelivers it | 30 |
| KEEL_EVENTS_MAX_DELIVER | deliveries of an event before it is dead-lettered | 5 |
| KEEL_EVENTS_BACKOFF | seconds before each retry of a failed handler (last repeats) | 1,5,30 |
| KEEL_EVENTS_POLL_INTERVAL | seconds between outbox polls when no commit wakes the relay | 1 |
| KEEL_EVENTS_BATCH | events the relay publishes, or a consumer fetches, at once | 100 |
| KEEL_EVENTS_KEEP_SENT | seconds sent outbox rows are kept (0: deleted once sent) | 0 |
| KEEL_EVENTS_START_WAIT | seconds start-up waits for the broker, then serves without it | 10 |
| KEEL_EVENTS_HANDLER_TIMEOUT | seconds an event handler may take before it counts as failed | 60 |
| KEEL_EVENTS_PUBLISH_TIMEOUT | seconds the relay waits for the broker's acks of a batch | 5 |
| KEEL_EVENTS_MAX_BACKOFF | longest wait, in seconds, before the relay or a consumer retries | 5 |
| KEEL_EVENTS_MAX_AGE | seconds streams keep events and dead letters (0: for ever) | 604800 |
| KEEL_IDEMPOTENCY_TTL | seconds a service keeps an idempotency key and its outcome | 86400 |
| KEEL_SAGA_BACKOFF | seconds before each retry of a saga step that failed transiently | 0.2,1,5 |
| KEEL_SAGA_LEASE | seconds a process holds a running saga before another may resume it | 30 |
| KEEL_TARGET_<SERVICE> | address of one service (`ACME_ORDERS_V1_ORDERSERVICE`) | |
| KEEL_REST_TARGET_<SERVICE> | host:port of one service's own REST port, for `keel gateway` | |

"gateway:" settings apply to a service's own REST port (KEEL_REST_PORT) as well.
An unknown `KEEL_` variable or an invalid value stops start-up with a message naming it.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlparse

PREFIX = "KEEL_"
TARGET_PREFIX = "KEEL_TARGET_"
"""`KEEL_TARGET_ACME_ORDERS_V1_ORDERSERVICE=host:port`: where a service is (see discovery)."""
REST_TARGET_PREFIX = "KEEL_REST_TARGET_"
"""`KEEL_REST_TARGET_ACME_ORDERS_V1_ORDERSERVICE=host:port`: where a service serves its own REST
routes (its KEEL_REST_PORT), which `keel gateway` passes requests through to."""
UPSTREAMS = ("auto", "grpc", "rest")
"""KEEL_GATEWAY_UPSTREAM's choices."""


def target_key(service: str) -> str:
    """The KEEL_TARGET_ suffix for a full service name: dots become underscores, upper case."""
    return service.replace(".", "_").upper()


class ConfigError(Exception):
    """A KEEL_* variable is unknown or has an invalid value."""


def rest_address(value: str) -> str:
    """`host:port` from `host:port` or `http://host:port` (a service's REST port); ValueError
    otherwise (https, a path, no port: the gateway speaks plain HTTP/1.1 to one address)."""
    text = value.strip()
    parsed = urlparse(text if "://" in text else f"http://{text}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if (
        parsed.scheme != "http"
        or not parsed.hostname
        or port is None
        or parsed.path not in ("", "/")
    ):
        raise ValueError("must be host:port or http://host:port")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{host}:{port}"


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return port


def _optional_port(value: str) -> int | None:
    if value.lower() in ("", "off"):
        return None
    return _port(value)


def _level(value: str) -> str:
    level = value.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError("must be one of debug, info, warning, error")
    return level


def _log_format(value: str) -> str:
    choice = value.lower()
    if choice not in ("json", "console", "auto"):
        raise ValueError("must be json, console or auto")
    return choice


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _seconds(value: str) -> float:
    seconds = float(value)
    if math.isnan(seconds) or not 0 <= seconds < 3600:
        raise ValueError("must be a number of seconds from 0 to 3600")
    return seconds


def _endpoint(value: str) -> str:
    parsed = urlparse(value if "://" in value else f"http://{value}")
    if not parsed.hostname or parsed.port is None:
        raise ValueError("must be host:port or a URL with a port, e.g. http://collector:4317")
    return value


def _positive_seconds(value: str) -> float:
    seconds = _seconds(value)
    if seconds == 0:
        raise ValueError("must be a number of seconds from 0 to 3600, above 0")
    return seconds


def _attempts(value: str) -> int:
    attempts = int(value)
    if not 1 <= attempts <= 5:
        raise ValueError("must be a whole number from 1 (no retries) to 5 (gRPC's limit)")
    return attempts


def _threshold(value: str) -> int:
    threshold = int(value)
    if not 1 <= threshold <= 1000:
        raise ValueError("must be a whole number from 1 to 1000")
    return threshold


def _per_second(counted: str, zero: str) -> Callable[[str], float]:
    """A parser of a rate from 0 (meaning `zero`) to 1,000,000 `counted` per second."""

    def parse(value: str) -> float:
        rate = float(value)
        if math.isnan(rate) or not 0 <= rate <= 1_000_000:
            raise ValueError(f"must be {counted} per second, from 0 ({zero}) to 1000000")
        return rate

    return parse


def _ratio(value: str) -> float:
    ratio = float(value)
    if math.isnan(ratio) or not 0 <= ratio <= 1:
        raise ValueError("must be a number from 0 to 1")
    return ratio


def _long_seconds(value: str) -> float:
    seconds = float(value)
    if math.isnan(seconds) or not 0 < seconds <= 86400 * 365:
        raise ValueError("must be a number of seconds above 0, at most a year")
    return seconds


def _keep_seconds(value: str) -> float:
    return 0.0 if float(value) == 0 else _long_seconds(value)


def _deliveries(value: str) -> int:
    deliveries = int(value)
    if not 1 <= deliveries <= 1000:
        raise ValueError("must be a whole number from 1 to 1000")
    return deliveries


def _batch(value: str) -> int:
    batch = int(value)
    if not 1 <= batch <= 10000:
        raise ValueError("must be a whole number from 1 to 10000")
    return batch


def _backoff(value: str) -> tuple[float, ...]:
    try:
        delays = tuple(_seconds(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise ValueError("must be seconds (0 to 3600) separated by commas, e.g. 1,5,30") from None
    if not delays:
        raise ValueError("must be seconds (0 to 3600) separated by commas, e.g. 1,5,30")
    return delays


def _upstream(value: str) -> str:
    choice = value.lower()
    if choice not in UPSTREAMS:
        raise ValueError("must be auto, grpc or rest")
    return choice


def _workers(value: str) -> int:
    workers = int(value)
    if not 1 <= workers <= 256:
        raise ValueError("must be a whole number from 1 to 256")
    return workers


_PARSERS: dict[str, Callable[[str], Any]] = {
    "host": str,
    "port": _port,
    "metrics_port": _port,
    "rest_port": _optional_port,
    "log_level": _level,
    "log_format": _log_format,
    "log_calls": _bool,
    "grace_period": _seconds,
    "otlp_endpoint": _endpoint,
    "trace_sample_ratio": _ratio,
    "trace_rate_limit": _per_second("new traces", "no limit"),
    "workers": _workers,
    "default_timeout": _positive_seconds,
    "retry_max_attempts": _attempts,
    "breaker_threshold": _threshold,
    "breaker_reset": _positive_seconds,
    "registry": str,
    "jwt_secret": str,
    "jwks_file": str,
    "jwks_url": str,
    "jwt_audience": str,
    "jwt_issuer": str,
    "jwt_leeway": _seconds,
    "rate_limit": _per_second("requests", "off"),
    "rate_burst": _threshold,
    "cors_origins": str,
    "edge_timeout": _positive_seconds,
    "edge_max_timeout": _seconds,
    "gateway_upstream": _upstream,
    "database_url": str,
    "state_dir": str,
    "migrate": _bool,
    "nats_url": str,
    "events_duplicate_window": _long_seconds,
    "events_ack_wait": _long_seconds,
    "events_max_deliver": _deliveries,
    "events_backoff": _backoff,
    "events_poll_interval": _positive_seconds,
    "events_batch": _batch,
    "events_keep_sent": _keep_seconds,
    "events_start_wait": _seconds,
    "events_handler_timeout": _positive_seconds,
    "events_publish_timeout": _positive_seconds,
    "events_max_backoff": _positive_seconds,
    "events_max_age": _keep_seconds,
    "idempotency_ttl": _long_seconds,
    "saga_backoff": _backoff,
    "saga_lease": _positive_seconds,
}


@dataclass(frozen=True)
class Settings:
    """Keel's runtime settings; `Settings.from_env()` reads them."""

    host: str = "0.0.0.0"
    port: int = 50051
    metrics_port: int = 9464
    rest_port: int | None = None
    log_level: str = "info"
    log_format: str = "auto"
    log_calls: bool = True
    grace_period: float = 30.0
    otlp_endpoint: str = ""
    trace_sample_ratio: float = 0.1
    trace_rate_limit: float = 100.0
    workers: int = 1
    default_timeout: float = 10.0
    retry_max_attempts: int = 4
    breaker_threshold: int = 5
    breaker_reset: float = 30.0
    registry: str = ""
    jwt_secret: str = ""
    jwks_file: str = ""
    jwks_url: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    jwt_leeway: float = 30.0
    rate_limit: float = 0.0
    rate_burst: int = 20
    cors_origins: str = ""
    edge_timeout: float = 30.0
    edge_max_timeout: float = 0.0
    gateway_upstream: str = "auto"
    database_url: str = ""
    state_dir: str = ""
    migrate: bool = False
    nats_url: str = ""
    events_duplicate_window: float = 120.0
    events_ack_wait: float = 30.0
    events_max_deliver: int = 5
    events_backoff: tuple[float, ...] = (1.0, 5.0, 30.0)
    events_poll_interval: float = 1.0
    events_batch: int = 100
    events_keep_sent: float = 0.0
    events_start_wait: float = 10.0
    events_handler_timeout: float = 60.0
    events_publish_timeout: float = 5.0
    events_max_backoff: float = 5.0
    events_max_age: float = 604800.0
    idempotency_ttl: float = 86400.0
    saga_backoff: tuple[float, ...] = (0.2, 1.0, 5.0)
    saga_lease: float = 30.0
    targets: Mapping[str, str] = field(default_factory=dict)
    rest_targets: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from `environ` (default: os.environ); ConfigError names any bad variable."""
        environ = os.environ if environ is None else environ
        maps = ("targets", "rest_targets")
        known = {f"{PREFIX}{f.name.upper()}": f.name for f in fields(cls) if f.name not in maps}
        values: dict[str, Any] = {}
        targets: dict[str, str] = {}
        rest_targets: dict[str, str] = {}
        for key, raw in sorted(environ.items()):
            if not key.startswith(PREFIX):
                continue
            if key.startswith(TARGET_PREFIX) and len(key) > len(TARGET_PREFIX):
                if not raw.strip():
                    raise ConfigError(f"{key} is empty: give host:port or a gRPC target URI")
                targets[key.removeprefix(TARGET_PREFIX)] = raw.strip()
                continue
            if key.startswith(REST_TARGET_PREFIX) and len(key) > len(REST_TARGET_PREFIX):
                try:
                    rest_targets[key.removeprefix(REST_TARGET_PREFIX)] = rest_address(raw)
                except ValueError as error:
                    raise ConfigError(f"{key}={raw!r}: {error}") from None
                continue
            name = known.get(key)
            if name is None:
                raise ConfigError(
                    f"unknown setting {key}; known settings: {', '.join(sorted(known))}"
                )
            try:
                values[name] = _PARSERS[name](raw.strip())
            except ValueError as error:
                reason = str(error) if "must" in str(error) else "is not a valid value"
                raise ConfigError(f"{key}={raw!r}: {reason}") from None
        return cls(**values, targets=targets, rest_targets=rest_targets)

    @property
    def console_logs(self) -> bool:
        """Whether logs are human-readable lines rather than JSON objects."""
        if self.log_format == "auto":
            return sys.stdout.isatty()
        return self.log_format == "console"


_current: Settings | None = None


def current() -> Settings:
    """The process's settings: from the environment on first use, or as `set_current` made them."""
    global _current  # noqa: PLW0603 (process-wide configuration)
    if _current is None:
        _current = Settings.from_env()
    return _current


def set_current(settings: Settings | None) -> None:
    """Replace the process's settings (None: read the environment again on next use)."""
    global _current  # noqa: PLW0603
    _current = settings
