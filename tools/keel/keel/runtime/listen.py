"""Ports a process listens on: a clear error for one it cannot have.

grpc (and SO_REUSEPORT in general) lets a second process bind a port another one listens on, and
the kernel then splits the connections between them: a mock or a second `keel dev` would quietly
take part of a running service's calls. Keel shares ports only between its own workers, and
refuses a port in use everywhere else.
"""

from __future__ import annotations

import socket
from typing import Any

import prometheus_client


class ListenError(OSError):
    """A port this process cannot listen on (most often: another process listens there)."""

    def __init__(self, address: str, what: str, cause: BaseException | None = None) -> None:
        reason = f" ({cause})" if isinstance(cause, OSError) else ""
        super().__init__(
            f"cannot listen on {address} for {what}{reason}: is another server (or keel dev)"
            " already using the port?"
        )


def _refusal(host: str, port: int) -> OSError | None:
    """Why `host:port` cannot be bound now (another process listens there), None if it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (not SO_REUSEPORT)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error
    return None


def bindable(host: str, port: int) -> bool:
    """Whether `host:port` can be bound now."""
    return _refusal(host, port) is None


def check_free(host: str, port: int, what: str) -> None:
    """Raise ListenError unless `host:port` is free to listen on (before workers share it)."""
    refused = _refusal(host, port)
    if refused is not None:
        raise ListenError(f"{host}:{port}", what, refused)


def serve_metrics(host: str, port: int, registry: Any = None) -> None:
    """Serve Prometheus metrics on `host:port` (`registry`: else the default one)."""
    options: dict[str, Any] = {} if registry is None else {"registry": registry}
    try:
        prometheus_client.start_http_server(port, addr=host, **options)
    except OSError as error:
        raise ListenError(f"{host}:{port}", "metrics (KEEL_METRICS_PORT)", error) from None
