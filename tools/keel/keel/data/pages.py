"""Opaque page tokens for keyset pagination: the last key of a page, not an offset.

A list ordered by a key (`ORDER BY product_id`) continues after the last key the client saw
(`WHERE product_id > :last`), so rows inserted or deleted meanwhile neither repeat nor skip
rows on later pages. The token is that key, versioned and base64url-encoded: clients must
treat it as opaque, and a token this code did not make is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence

_VERSION = 1

Key = tuple[str | int, ...]


class PageTokenError(ValueError):
    """A page token that no list of this service issued."""


def encode_page_token(key: Sequence[str | int]) -> str:
    """The token for the page after the row whose sort key is `key`."""
    raw = json.dumps([_VERSION, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_page_token(token: str) -> Key:
    """The key a token carries; () for "" (the first page). PageTokenError if it is not ours."""
    if not token:
        return ()
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise PageTokenError("page_token is not one this service issued") from None
    if (
        not isinstance(value, list)
        or len(value) < 2
        or value[0] != _VERSION
        or not all(isinstance(part, str | int) and not isinstance(part, bool) for part in value)
    ):
        raise PageTokenError("page_token is not one this service issued")
    return tuple(value[1:])
