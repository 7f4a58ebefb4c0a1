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
    try:  # nearly every request: ASCII without escapes or dots (checked as a str: `in` on
        text = raw.decode("ascii")  # bytes tries the operand as an int first, an error each)
    except UnicodeDecodeError:
        return _checked(raw.split(b"?", 1)[0])
    if "?" in text:  # (ASGI's raw_path has no query string; other targets may)
        text = text.split("?", 1)[0]
    if "%" not in text and "/." not in text:
        return text
    return _checked(text.encode("ascii"))


def _checked(path: bytes) -> str:
    """A path with percent-escapes, dots or bytes beyond ASCII, checked segment by segment."""
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
