"""Prometheus metrics of events, per subject, in prometheus_client's default registry.

`keel_events_published_total` (the relay had the broker's ack), `keel_events_delivered_total`,
`keel_events_redelivered_total` (deliveries after the first), `keel_events_acked_total`
(handled, or skipped as already handled), `keel_events_dead_lettered_total`, and the outbox's
`keel_events_outbox_pending` (unsent rows) and `keel_events_outbox_lag_seconds` (age of the
oldest). With `PROMETHEUS_MULTIPROC_DIR` set they are shared over worker processes as
prometheus_client shares any metric.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge


@dataclass(frozen=True)
class EventMetrics:
    published: Counter
    delivered: Counter
    redelivered: Counter
    acked: Counter
    dead_lettered: Counter
    outbox_pending: Gauge
    outbox_lag: Gauge


_metrics: EventMetrics | None = None


def metrics() -> EventMetrics:
    """The process's event metrics (made on first use)."""
    global _metrics  # noqa: PLW0603 (one set of collectors per process registry)
    if _metrics is None:
        label = ("subject",)
        _metrics = EventMetrics(
            published=Counter(
                "keel_events_published", "Events the broker acknowledged from the outbox", label
            ),
            delivered=Counter("keel_events_delivered", "Event deliveries to handlers", label),
            redelivered=Counter(
                "keel_events_redelivered", "Event deliveries after the first", label
            ),
            acked=Counter("keel_events_acked", "Events handled (or already handled), acked", label),
            dead_lettered=Counter(
                "keel_events_dead_lettered", "Events sent to a dead-letter subject", label
            ),
            outbox_pending=Gauge(
                "keel_events_outbox_pending",
                "Outbox rows not yet sent",
                multiprocess_mode="livemax",
            ),
            outbox_lag=Gauge(
                "keel_events_outbox_lag_seconds",
                "Age of the oldest unsent outbox row",
                multiprocess_mode="livemax",
            ),
        )
    return _metrics
