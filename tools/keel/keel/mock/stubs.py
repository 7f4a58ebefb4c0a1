"""Stubs: answers chosen by matching a call's method and request fields.

A stub file (YAML, or JSON) holds `stubs:`, a list of stubs; each names its `method`, may
`match` request fields (`equals`, `contains`, `regex`: dotted paths of the request as proto
JSON → values) and answers with `respond` (the response in proto JSON), `error` (code,
message, google.rpc `details` with `@type`), `delay` (seconds), `stream` (server streaming:
the messages), or a `sequence` of such answers (one per call, the last repeating). See
docs/mock.md.
"""

from __future__ import annotations

import importlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.rpc import status_pb2

from keel.errors import KeelError, from_status

_ANSWER_KEYS = {"respond", "error", "delay", "stream"}
_MATCH_KEYS = {"equals", "contains", "regex", "headers"}
_ids = itertools.count(1)


class StubError(ValueError):
    """A stub that is not well formed (its source and what is wrong)."""


@dataclass(frozen=True)
class Answer:
    """One answer: a response or stream, or an error, after an optional delay."""

    respond: Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = None
    delay: float = 0.0
    stream: tuple[Mapping[str, Any], ...] | None = None

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.respond is not None:
            found["respond"] = dict(self.respond)
        if self.stream is not None:
            found["stream"] = [dict(m) for m in self.stream]
        if self.error is not None:
            found["error"] = dict(self.error)
        if self.delay:
            found["delay"] = self.delay
        return found

    def failure(self) -> KeelError | None:
        """The error this answer ends the call with, if any (google.rpc details included)."""
        if self.error is None:
            return None
        return error_from_json(self.error)


@dataclass
class Stub:
    """A method, conditions on the request, and the answers of successive matching calls."""

    method: str
    answers: tuple[Answer, ...]
    match: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    id: str = ""
    used: int = 0

    @property
    def specificity(self) -> int:
        """The number of conditions: more specific stubs are tried first."""
        return sum(len(conditions) for conditions in self.match.values())

    def applies(self, method: str, request: Any, metadata: Mapping[str, str] | None = None) -> bool:
        """Whether a call of `method` (`pkg.Service/Method`) with `request` (proto JSON with
        field names as in the proto) and `metadata` matches this stub."""
        return method_matches(self.method, method) and matches(self.match, request, metadata)

    def take(self) -> Answer:
        """The answer of this call: the next one of the sequence, the last one repeating."""
        answer = self.answers[min(self.used, len(self.answers) - 1)]
        self.used += 1
        return answer

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"id": self.id, "method": self.method}
        if self.match:
            found["match"] = {k: dict(v) for k, v in self.match.items()}
        if len(self.answers) == 1:
            found |= self.answers[0].to_json()
        else:
            found["sequence"] = [a.to_json() for a in self.answers]
        found["used"] = self.used
        return found


def method_matches(pattern: str, method: str) -> bool:
    """`pkg.Service/Method`, `Service/Method` or `Method` against a full `pkg.Service/Method`."""
    wanted = pattern.lstrip("/")
    return method == wanted or method.endswith(("/" + wanted, "." + wanted))


def parse(data: Any, source: str = "stub") -> list[Stub]:
    """Stubs from decoded JSON/YAML: `{"stubs": [...]}`, a list, or one stub."""
    if isinstance(data, Mapping) and "stubs" in data:
        data = data["stubs"]
    items = data if isinstance(data, list) else [data]
    return [_stub(item, f"{source}[{index}]") for index, item in enumerate(items)]


def load(path: Path) -> list[Stub]:
    """The stubs of a file: YAML (`.yaml`/`.yml`, with PyYAML installed) or JSON."""
    text = path.read_text()
    if path.suffix in {".yaml", ".yml"}:
        try:
            yaml = importlib.import_module("yaml")
        except ImportError:
            raise StubError(
                f"{path}: reading YAML needs PyYAML (or write the stubs as JSON)"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise StubError(f"{path}: {error}") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as error:
            raise StubError(f"{path}: {error}") from None
    return parse(data, str(path))


def _stub(item: Any, where: str) -> Stub:
    if not isinstance(item, Mapping):
        raise StubError(f"{where}: a stub is an object, not {type(item).__name__}")
    unknown = set(item) - _ANSWER_KEYS - {"method", "match", "sequence", "id", "used"}
    if unknown:
        raise StubError(f"{where}: unknown keys {sorted(unknown)}")
    method = item.get("method")
    if not isinstance(method, str) or not method:
        raise StubError(f"{where}: `method` names the rpc (pkg.Service/Method)")
    match = item.get("match") or {}
    if not isinstance(match, Mapping) or set(match) - _MATCH_KEYS:
        raise StubError(f"{where}: `match` takes {sorted(_MATCH_KEYS)}")
    for kind, conditions in match.items():
        if not isinstance(conditions, Mapping):
            raise StubError(f"{where}: match.{kind} maps field paths to values")
        if kind == "regex":
            for path, pattern in conditions.items():
                try:
                    re.compile(str(pattern))
                except re.error as error:
                    raise StubError(f"{where}: match.regex.{path}: {error}") from None
    if "sequence" in item:
        if (
            set(item) & _ANSWER_KEYS
            or not isinstance(item["sequence"], list)
            or not item["sequence"]
        ):
            raise StubError(f"{where}: `sequence` is a list of answers, instead of one answer")
        answers = tuple(
            _answer(a, f"{where}.sequence[{i}]") for i, a in enumerate(item["sequence"])
        )
    else:
        answers = (_answer(item, where),)
    return Stub(
        method,
        answers,
        {k: dict(v) for k, v in match.items()},
        str(item.get("id") or f"stub-{next(_ids)}"),
    )


def _answer(item: Any, where: str) -> Answer:
    if not isinstance(item, Mapping) or not set(item) & _ANSWER_KEYS:
        raise StubError(f"{where}: an answer has `respond`, `error`, `stream` or `delay`")
    if "respond" in item and "error" in item:
        raise StubError(f"{where}: `respond` or `error`, not both")
    delay = item.get("delay", 0)
    if not isinstance(delay, int | float) or delay < 0:
        raise StubError(f"{where}: `delay` is seconds, >= 0")
    stream = item.get("stream")
    if stream is not None and not isinstance(stream, list):
        raise StubError(f"{where}: `stream` is a list of messages")
    error = item.get("error")
    if error is not None:
        try:
            error_from_json(error)
        except (ValueError, TypeError, json_format.ParseError) as problem:
            raise StubError(f"{where}.error: {problem}") from None
    return Answer(
        item.get("respond"), error, float(delay), tuple(stream) if stream is not None else None
    )


def error_from_json(error: Mapping[str, Any]) -> KeelError:
    """`{"code": "NOT_FOUND" | 5, "message": ..., "details": [{"@type": ..., ...}]}` as the
    error a Keel service raises (details sent in `grpc-status-details-bin`)."""
    code = error.get("code", "UNKNOWN")
    number = code if isinstance(code, int) else _code_number(str(code))
    status = status_pb2.Status(code=number, message=str(error.get("message", "")))
    for detail in error.get("details", []):
        json_format.ParseDict(detail, status.details.add())
    return from_status(status)


def _code_number(name: str) -> int:
    import grpc  # noqa: PLC0415

    for code in grpc.StatusCode:
        if code.name == name.upper():
            return int(code.value[0])
    raise ValueError(f"unknown status code {name!r}")


def matches(
    match: Mapping[str, Mapping[str, Any]],
    request: Any,
    metadata: Mapping[str, str] | None = None,
) -> bool:
    """Whether every condition holds for `request` (and `headers` ones for `metadata`)."""
    for kind, conditions in match.items():
        if kind == "headers":
            sent = metadata or {}
            if any(sent.get(k.lower()) != str(v) for k, v in conditions.items()):
                return False
            continue
        for path, expected in conditions.items():
            found, actual = lookup(request, path)
            if not found:
                return False
            if kind == "equals" and not _same(actual, expected):
                return False
            if kind == "contains" and not _contains(actual, expected):
                return False
            if kind == "regex" and re.search(str(expected), _text(actual)) is None:
                return False
    return True


def lookup(data: Any, path: str) -> tuple[bool, Any]:
    """The value at a dotted path (`lines.0.product_id`; lowerCamelCase names work too)."""
    for part in path.split("."):
        if isinstance(data, list):
            if not part.isdigit() or int(part) >= len(data):
                return False, None
            data = data[int(part)]
        elif isinstance(data, Mapping):
            key = part if part in data else _snake(part)
            if key not in data:
                return False, None
            data = data[key]
        else:
            return False, None
    return True, data


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _same(actual: Any, expected: Any) -> bool:
    """Equal as JSON values; int64 fields (strings in proto JSON) equal their numbers."""
    if isinstance(actual, Mapping) and isinstance(expected, Mapping):
        return all(_same(actual.get(k, actual.get(_snake(k))), v) for k, v in expected.items())
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(map(_same, actual, expected))
    if isinstance(actual, str) != isinstance(expected, str) and not isinstance(expected, bool):
        return str(actual) == str(expected)
    return bool(actual == expected)


def _contains(actual: Any, expected: Any) -> bool:
    """A substring of a string, elements of a list, a subset of an object."""
    if isinstance(actual, str):
        return str(expected) in actual
    if isinstance(actual, list):
        wanted = expected if isinstance(expected, list) else [expected]
        return all(any(_same(a, w) or _contains(a, w) for a in actual) for w in wanted)
    if isinstance(actual, Mapping) and isinstance(expected, Mapping):
        return all(k in actual or _snake(k) in actual for k in expected) and _same(actual, expected)
    return _same(actual, expected)
