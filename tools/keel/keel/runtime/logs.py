"""Structured logs: one JSON object per line on stdout (a readable console format on a terminal).

JSON lines are rendered by orjson and written as bytes (structlog's performance guide), each
line at once, flushed at the end of the event-loop turn that wrote it (see TurnFlushed). The
per-call line (HotLogger) skips structlog's processor chain while Keel's own JSON configuration
is active, and renders the same line directly.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import orjson
import structlog
from structlog import _config as structlog_config
from structlog import contextvars as structlog_contextvars

from keel.runtime import correlation


def _add_correlation_id(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    current = correlation.current()
    if current and "correlation_id" not in event:
        event["correlation_id"] = current
    return event


_time_ns = time.time_ns


class UtcClock:
    """ISO 8601 UTC timestamps as structlog's TimeStamper(fmt="iso", utc=True) writes them
    (2026-11-25T10:22:11.123456Z), with the date and time of day formatted once a second."""

    def __init__(self) -> None:
        self._start = -2_000_000
        """A second before the current second began, in microseconds since the epoch (the
        prefix is made again once the current second is over)."""
        self._prefix = ""
        self._dotted = ""

    def now(self) -> str:
        micros = _time_ns() // 1000
        # A second plus the microseconds into this one: its digits after the first are the
        # fraction, zero-padded (cheaper than divmod and a format spec such as :06d).
        fraction = micros - self._start
        if 1_000_000 < fraction < 2_000_000:  # within the current second, past its start
            return self._dotted + str(fraction)[1:] + "Z"
        if fraction != 1_000_000:  # another second: its prefix is made anew
            second = micros // 1_000_000
            moment = datetime.datetime.fromtimestamp(second, tz=datetime.UTC)
            self._prefix = moment.replace(tzinfo=None).isoformat()
            self._dotted = self._prefix + "."
            self._start = (second - 1) * 1_000_000
            fraction = micros - self._start
            if fraction != 1_000_000:
                return self._dotted + str(fraction)[1:] + "Z"
        return self._prefix + "Z"  # a whole second: isoformat writes no fraction

    def __call__(self, _: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        event["timestamp"] = self.now()
        return event


_clock = UtcClock()


@dataclass(frozen=True)
class _JsonLines:
    """Keel's JSON configuration, while it is structlog's: where HotLogger writes directly."""

    processors: list[Any]
    stream: TurnFlushed
    level: int


_json_lines: _JsonLines | None = None
_DIRECT_JSON = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


def _unserializable(value: Any) -> Any:
    """What a JSON line holds for a value JSON cannot: its `__structlog__()`, else its repr
    (structlog's own fallback)."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


def configure(level: str = "info", *, console: bool = False) -> None:
    """Route structlog to stdout: JSON lines flushed per event-loop turn, or console lines."""
    global _json_lines  # noqa: PLW0603 (the one configuration structlog has is global too)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _clock,
        _add_correlation_id,
    ]
    levelno = logging.getLevelName(level.upper())
    binary = getattr(sys.stdout, "buffer", None)
    factory: Any = structlog.PrintLoggerFactory(sys.stdout)
    _json_lines = None
    if console:
        processors.append(structlog.dev.ConsoleRenderer(colors=True))
    elif binary is not None:
        renderer = structlog.processors.JSONRenderer(
            serializer=orjson.dumps, default=_unserializable, option=orjson.OPT_NON_STR_KEYS
        )
        processors += [structlog.processors.dict_tracebacks, renderer]
        stream = TurnFlushed(binary)
        factory = structlog.BytesLoggerFactory(cast("BinaryIO", stream))
        _json_lines = _JsonLines(processors, stream, levelno)
    else:  # a text-only stdout (a test's StringIO)
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


class TurnFlushed:
    """A binary stream for log lines: each line is written at once and flushed at the end of the
    event-loop turn that wrote it (at once when no loop runs in the writing thread).

    Under load one turn writes many lines; flushing each is a syscall that lets grpc's poller
    thread take the GIL, which cost more than the line itself. An unbuffered stream
    (`PYTHONUNBUFFERED=1`, common in containers, makes stdout's one) has written each line
    already, so nothing is scheduled for it.
    """

    def __init__(self, binary: Any) -> None:
        self._binary = binary
        self._pending = isinstance(binary, io.RawIOBase)
        """Whether a flush is due at the end of this turn (always, for an unbuffered stream:
        its flush has nothing to do)."""

    def write(self, data: bytes) -> int:
        written: int = self._binary.write(data)
        return written

    def line(self, data: bytes) -> None:
        """Write one line and have it flushed (`write` and `flush` in one call)."""
        self._binary.write(data)
        if not self._pending:
            self.flush()

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
        try:  # (not contextlib.suppress: a context manager object a turn costs as much again)
            self._binary.flush()
        except (OSError, ValueError):  # stdout closed or broken: lines are lost
            return


def get_logger(name: str = "keel") -> Any:
    """A structlog logger."""
    return structlog.get_logger(name)


class HotLogger:
    """A logger for a hot path (a line per call).

    structlog's lazy logger binds itself anew on every call unless loggers are cached, and a
    cached logger ignores later configuration (`structlog.testing.capture_logs` among it).
    This one binds once and again only when the configured processors change. While Keel's
    JSON configuration is active, `info` writes the line structlog would have written (same
    keys, context variables and timestamp format) without running the processor chain: in a
    loaded server that chain cost more than a third of a call's own Python time.
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

    def info(self, event: str, **fields: Any) -> None:
        """Log `event` at info level with `fields`."""
        self.line(event, fields)

    def line(self, event: str, fields: dict[str, Any]) -> None:
        """Log `event` at info level with `fields` (a dict this call may change)."""
        lines = _json_lines
        # structlog's own state, read directly: get_config() builds a dict and
        # get_contextvars() walks every context variable of the task, on every line.
        if lines is None or structlog_config._CONFIG.default_processors is not lines.processors:
            self.get().info(event, **fields)
            return
        if lines.level > logging.INFO:
            return
        fields["event"] = event
        bound = structlog_contextvars._CONTEXT_VARS
        if bound:
            skip = structlog_contextvars.STRUCTLOG_KEY_PREFIX_LEN
            for key, variable in tuple(bound.items()):
                value = variable.get(Ellipsis)
                if value is not Ellipsis:
                    fields.setdefault(key[skip:], value)
        fields["level"] = "info"
        fields["timestamp"] = _clock.now()
        if "correlation_id" not in fields:
            _add_correlation_id(None, "info", fields)
        try:  # the plain call costs less than one with options; it declines what it cannot take
            data = orjson.dumps(fields) + b"\n"
        except orjson.JSONEncodeError:  # a key not a str, a value JSON has no form for
            data = orjson.dumps(fields, default=_unserializable, option=_DIRECT_JSON)
        lines.stream.line(data)
