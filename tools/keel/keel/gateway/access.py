"""Each request at the edge: one log line, its count in the edge's metrics, and the SERVER span
that starts its trace.

The line (`event: "http"`) carries the HTTP method, the route template that matched (an edge
endpoint's own path, such as `/healthz`; "" when nothing matched), the status, the duration,
the correlation id (`X-Request-Id`, sent to every service the request reaches), the verified
subject and, at the gateway, where the request went (`upstream`, `via`: `grpc` transcoded or
`rest` passed through); KEEL_LOG_CALLS=false turns it off, as it does the services'
per-call lines. The span follows OpenTelemetry's HTTP conventions; the calls the request makes
are its children, so one trace goes from the edge through every service. The metrics
(keel.runtime.httpmetrics) count every request by method, route and status, with its duration.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import Status, StatusCode

from keel.runtime import tracing
from keel.runtime.httpmetrics import HttpMetrics
from keel.runtime.logs import HotLogger

_lines = HotLogger("keel.gateway")


class AccessRecord:
    """What one request did, logged (and its span ended) by `finish`."""

    __slots__ = (
        "_began",
        "_log",
        "_metrics",
        "_span",
        "correlation_id",
        "method",
        "route",
        "subject",
        "upstream",
    )

    def __init__(
        self,
        method: str,
        correlation_id: str,
        headers: Mapping[str, str],
        *,
        log: bool = True,
        span: bool = True,
        metrics: HttpMetrics | None = None,
    ) -> None:
        self._began = time.perf_counter()
        self._log = log
        self._metrics = metrics
        self.method = method
        self.correlation_id = correlation_id
        self.route = ""
        """The template of the route that matched ("" when none did)."""
        self.subject = ""
        self.upstream: tuple[str, str] | None = None
        """Where the request went: (its address, `grpc` or `rest`); None when it went nowhere
        or was answered in this process."""
        tracer = tracing.tracer() if span else None
        self._span = None
        if tracer is not None:
            attributes: dict[str, Any] = {"http.request.method": method}
            self._span = tracing.start_edge_span(tracer, method, headers, attributes)

    def matched(self, route: str) -> None:
        self.route = route
        if self._span is not None:
            span = self._span[0]
            span.update_name(f"{self.method} {route}")
            span.set_attribute("http.route", route)

    def finish(self, status: int) -> None:
        """Log the request's line, count it and end its span (`status` 499: the client went
        away)."""
        elapsed = time.perf_counter() - self._began
        if self._metrics is not None:
            self._metrics.record(self.method, self.route, status, elapsed)
        if self._span is not None:
            span = self._span[0]
            if span.is_recording():
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            tracing.end_span(self._span)
        if not self._log:
            return
        fields: dict[str, Any] = {
            "method": self.method,
            "route": self.route,
            "status": status,
            "duration_ms": round(elapsed * 1_000_000) / 1000,  # (round(x, 3) costs more)
            "correlation_id": self.correlation_id,
            "subject": self.subject,
        }
        if self.upstream is not None:
            fields["upstream"], fields["via"] = self.upstream
        try:
            _lines.line("http", fields)
        except (OSError, ValueError):  # stdout closed: answered all the same
            return  # (not contextlib.suppress: three calls more per request)
