"""What a mock knows at run time: its methods, its stubs and the calls it received."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from keel.mock.stubs import Stub, StubError, method_matches
from keel.runtime.spec import MethodSpec

Forward = Callable[
    [MethodSpec[Any, Any], Sequence[Message], Sequence[tuple[str, str | bytes]]],
    Awaitable[list[Message]],
]
"""Answers a call elsewhere (record mode): the response messages, or raises a KeelError."""


@dataclass(frozen=True)
class Call:
    """One call the mock received: the method (`pkg.Service/Method`), the request as proto JSON
    with the proto's field names (a list of them for a client-streaming call), its metadata, when
    it came (RFC 3339, UTC) and the id of the stub that answered it ("" for generated data)."""

    method: str
    request: Any
    metadata: Mapping[str, str]
    time: str
    stub: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def metadata_json(pairs: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    """Call metadata as a JSON object (binary values base64; a repeated key keeps its last)."""
    return {
        key: value if isinstance(value, str) else base64.b64encode(value).decode()
        for key, value in pairs
    }


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class MockState:
    """The methods served (by `pkg.Service/Method`), the stubs and the calls of one mock."""

    def __init__(self, methods: Sequence[MethodSpec[Any, Any]], seed: int = 0) -> None:
        self.seed = seed
        self.methods = {f"{m.service}/{m.name}": m for m in methods}
        self.stubs: list[Stub] = []
        self.received: list[Call] = []
        self.forward: Forward | None = None
        """When set, every call is answered by it (no stub, no generated data)."""

    def add(self, stubs: Iterable[Stub]) -> list[Stub]:
        """Check and add stubs (a later stub wins over an earlier one as specific)."""
        stubs = list(stubs)
        for stub in stubs:
            self._check(stub)
        self.stubs.extend(stubs)
        return stubs

    def _check(self, stub: Stub) -> None:
        named = [m for path, m in self.methods.items() if method_matches(stub.method, path)]
        if not named:
            raise StubError(f"stub {stub.id}: no served method is {stub.method!r}")
        for method in named:
            for answer in stub.answers:
                for message in (answer.respond, *(answer.stream or ())):
                    if message is None:
                        continue
                    try:
                        json_format.ParseDict(dict(message), method.response_type())
                    except json_format.ParseError as error:
                        raise StubError(f"stub {stub.id} ({method.name}): {error}") from None

    def remove(self, ids: Iterable[str] = ()) -> int:
        """Remove the stubs with these ids (none given: all); how many went."""
        wanted = set(ids)
        kept = [s for s in self.stubs if wanted and s.id not in wanted]
        removed = len(self.stubs) - len(kept)
        self.stubs = kept
        return removed

    def find(
        self, method: str, request: Any, metadata: Mapping[str, str] | None = None
    ) -> Stub | None:
        """The stub that answers this call: the most specific match, the latest of equals."""
        found: Stub | None = None
        for stub in self.stubs:
            if stub.applies(method, request, metadata) and (
                found is None or stub.specificity >= found.specificity
            ):
                found = stub
        return found

    def record(self, call: Call) -> None:
        self.received.append(call)

    def calls(self, method: str | None = None) -> list[Call]:
        """The calls received, oldest first; only those of `method` (`pkg.Service/Method`,
        `Service/Method` or `Method`) when given."""
        if method is None:
            return list(self.received)
        return [c for c in self.received if method_matches(method, c.method)]

    def clear_calls(self) -> None:
        self.received.clear()
