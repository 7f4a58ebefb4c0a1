"""Free ports for tests and benchmarks that start Keel servers as separate processes."""

from __future__ import annotations

import socket

METRICS_OFFSET = 1000
"""A service serves its metrics this far above its gRPC port (keel dev, the registry's ports)."""


def free_port_pair() -> int:
    """A port p with p and p + METRICS_OFFSET free now (a service's gRPC and metrics ports)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + METRICS_OFFSET > 65535:
            continue
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.1", port + METRICS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")
