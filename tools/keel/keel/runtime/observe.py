"""Per-call observation on the server: one log line and the call's metrics (keel.runtime.metrics).

The line (`"event": "rpc"`: service, method, code, duration, correlation id, peer) is written
before the call's status goes out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc

from keel.runtime import correlation, tally, tracing
from keel.runtime.context import Context
from keel.runtime.logs import HotLogger
from keel.runtime.metrics import ServerMetrics
from keel.runtime.spec import MethodSpec

_CODES = {code.value[0]: code for code in grpc.StatusCode}
_calls = HotLogger("keel.call")


def status_code(value: Any) -> grpc.StatusCode:
    """A grpc.StatusCode from what a context reports (a StatusCode, an int or None → OK)."""
    if isinstance(value, grpc.StatusCode):
        return value
    if isinstance(value, int):
        return _CODES.get(value, grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.OK


@dataclass(frozen=True)
class Observation:
    """What to record for calls: per-call log lines and/or metrics."""

    log_calls: bool = True
    metrics: ServerMetrics | None = None

    def for_method(self, spec: MethodSpec[Any, Any]) -> MethodObserver:
        return MethodObserver(spec, self)


class MethodObserver:
    """Records the calls of one method; label children are bound once, not per call."""

    def __init__(self, spec: MethodSpec[Any, Any], observation: Observation) -> None:
        self.spec = spec
        self.log_calls = observation.log_calls
        self.metrics = observation.metrics
        self._service, _, self._method = spec.path[1:].partition("/")
        self.counts = None if self.metrics is None else self.metrics.counts(spec)
        """The method's count array (keel.runtime.tally), None without metrics."""
        self.tracer = tracing.tracer()
        self.lost_lines = 0
        """Per-call log lines that could not be written."""

    @property
    def active(self) -> bool:
        return self.log_calls or self.metrics is not None or self.tracer is not None

    def started(self) -> float:
        counts = self.counts
        if counts is not None:
            counts[tally.STARTED] += 1
        return time.perf_counter()

    def received(self) -> None:
        counts = self.counts
        if counts is not None:
            counts[tally.RECEIVED] += 1

    def sent(self) -> None:
        counts = self.counts
        if counts is not None:
            counts[tally.SENT] += 1

    def finished(
        self, began: float, code: grpc.StatusCode, context: Any, call: Context | None = None
    ) -> None:
        """Record one finished call (the context is asked for the peer only when logging;
        `call`, the call's keel.Context if the caller has it, for its correlation id)."""
        elapsed = time.perf_counter() - began
        if self.counts is not None:
            tally.finish(self.counts, code, elapsed)
        if self.log_calls:
            try:
                _calls.line(
                    "rpc",
                    {
                        "service": self._service,
                        "method": self._method,
                        "code": code._name_,  # an attribute read: no enum hashing
                        # (the same value as round(elapsed * 1000, 3), without its decimal
                        # conversion)
                        "duration_ms": round(elapsed * 1_000_000) / 1000,
                        "correlation_id": (
                            correlation.current() if call is None else call.correlation_id
                        ),
                        "peer": context.peer(),
                    },
                )
            except (OSError, ValueError):  # stdout closed or broken: the call still succeeds
                self.lost_lines += 1
