"""Structured logs: one JSON object per line on stdout (a readable console format on a terminal).

JSON lines are rendered by orjson and written as bytes (structlog's performance guide), each
line at once, flushed at the end of the event-loop turn that wrote it (see TurnFlushed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import Any, BinaryIO, cast

import orjson
import structlog

from keel.runtime import correlation


def _add_correlation_id(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    current = correlation.current()
    if current and "correlation_id" not in event:
        event["correlation_id"] = current
    return event


def configure(level: str = "info", *, console: bool = False) -> None:
    """Route structlog to stdout: JSON lines flushed per event-loop turn, or console lines."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_correlation_id,
    ]
    binary = getattr(sys.stdout, "buffer", None)
    factory: Any = structlog.PrintLoggerFactory(sys.stdout)
    if console:
        processors.append(structlog.dev.ConsoleRenderer(colors=True))
    elif binary is not None:
        processors += [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(
                serializer=orjson.dumps, option=orjson.OPT_NON_STR_KEYS
            ),
        ]
        factory = structlog.BytesLoggerFactory(cast("BinaryIO", TurnFlushed(binary)))
    else:  # a text-only stdout (a test's StringIO)
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


class TurnFlushed:
    """A binary stream for log lines: each line is written at once and flushed at the end of the
    event-loop turn that wrote it (at once when no loop runs in the writing thread).

    Under load one turn writes many lines; flushing each is a syscall that lets grpc's poller
    thread take the GIL, which cost more than the line itself.
    """

    def __init__(self, binary: Any) -> None:
        self._binary = binary
        self._pending = False

    def write(self, data: bytes) -> int:
        written: int = self._binary.write(data)
        return written

    def flush(self) -> None:
        if self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._binary.flush()
            return
        self._pending = True
        loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._pending = False
        with contextlib.suppress(OSError, ValueError):  # stdout closed or broken: lines are lost
            self._binary.flush()


def get_logger(name: str = "keel") -> Any:
    """A structlog logger."""
    return structlog.get_logger(name)


class HotLogger:
    """A logger for a hot path (a line per call).

    structlog's lazy logger binds itself anew on every call unless loggers are cached, and a
    cached logger ignores later configuration (`structlog.testing.capture_logs` among it).
    This one binds once and again only when the configured processors change.
    """

    __slots__ = ("_logger", "_name", "_processors")

    def __init__(self, name: str) -> None:
        self._name = name
        self._processors: Any = None
        self._logger: Any = None

    def get(self) -> Any:
        """The bound logger for the current configuration."""
        processors = structlog.get_config()["processors"]
        if processors is not self._processors:
            self._logger = structlog.get_logger(self._name).bind()
            self._processors = processors
        return self._logger
