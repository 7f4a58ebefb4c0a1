"""Structured logs: one JSON object per line on stdout (a readable console format on a terminal)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from keel.runtime import correlation


def _add_correlation_id(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    current = correlation.current()
    if current and "correlation_id" not in event:
        event["correlation_id"] = current
    return event


def configure(level: str = "info", *, console: bool = False) -> None:
    """Route structlog (and stdlib logging) to stdout, flushed per line."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_correlation_id,
    ]
    if console:
        processors.append(structlog.dev.ConsoleRenderer(colors=True))
    else:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "keel") -> Any:
    """A structlog logger."""
    return structlog.get_logger(name)
