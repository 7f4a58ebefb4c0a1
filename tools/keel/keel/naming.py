"""Name conversions shared by the generator and the runtime."""

from __future__ import annotations

import re

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """`CreateOrder` → `create_order`, `GetHTTPRoute` → `get_http_route`."""
    return _WORD_BOUNDARY.sub("_", name).lower()
