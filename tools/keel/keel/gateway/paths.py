"""The request path as the router sees it, refused when it could not be a resource name.

Dot segments (`.`, `..`, and their percent-encoded forms) would be bound into resource names
(`/v1/shelves/../books/2` → `shelves/../books/2`): a path traversal handed to every service.
Percent-escapes that do not decode as UTF-8 would become U+FFFD, so distinct URLs would alias
one name. Both are a 400 naming the segment.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from keel.gateway.protojson import InputError

_DOTS = (b".", b"..")


def request_path(raw: bytes) -> str:
    """The path of a raw request target (the query string cut off), checked segment by segment."""
    path = raw.split(b"?", 1)[0]
    if b"%" not in path and b"/." not in path and path.isascii():  # nearly every request
        return path.decode("ascii")
    for segment in path.split(b"/"):
        decoded = unquote_to_bytes(segment)
        if decoded in _DOTS or decoded.split(b":", 1)[0] in _DOTS:
            shown = segment.decode("latin-1")
            raise InputError(f"the path segment {shown!r} is not allowed (dot segments)")
        try:
            decoded.decode("utf-8")
        except UnicodeDecodeError:
            shown = segment.decode("latin-1")
            raise InputError(
                f"the path segment {shown!r} is not UTF-8 after percent-decoding"
            ) from None
    try:
        return path.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("the path is not UTF-8") from None
