"""`keel.events.background`: a service's event tasks in one line.

    keel.serve(
        [OrderService(store)],
        background=keel.events.background(db, publishers=[orders_keel.OrderServicePublisher]),
    )

With KEEL_NATS_URL: a `Relay` for the outbox (provisioning the streams of the events the
publishers declare) and `Consumers` for the subscribers. Without it: no task and a warning;
the outbox keeps the events until the service runs with a broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from keel.events.publisher import Publisher
from keel.events.spec import Subscriber
from keel.runtime import config, logs
from keel.runtime.config import Settings

if TYPE_CHECKING:
    from keel.data import Database
    from keel.runtime.server import Background

_log = logs.get_logger("keel.events")


def background(
    database: Database,
    *,
    publishers: Sequence[type[Publisher]] = (),
    subscribers: Sequence[Subscriber] = (),
    settings: Settings | None = None,
) -> list[Background]:
    """The server background tasks for a service's events: a Relay when it has publishers,
    Consumers when it has subscribers; none (and a warning) without KEEL_NATS_URL."""
    settings = settings or config.current()
    if not publishers and not subscribers:
        return []
    if not settings.nats_url:
        _log.warning(
            "KEEL_NATS_URL is not set: no events are relayed or consumed"
            " (the outbox keeps them until the service runs with a broker)"
        )
        return []
    from keel.events.consumer import Consumers  # noqa: PLC0415 (NATS: only with a broker)
    from keel.events.relay import Relay  # noqa: PLC0415

    tasks: list[Background] = []
    if publishers:
        specs = [spec for cls in publishers for spec in cls.__keel_publishes__]
        tasks.append(Relay(database, settings=settings, publishes=list(dict.fromkeys(specs))))
    if subscribers:
        tasks.append(Consumers(database, subscribers, settings=settings))
    return tasks
