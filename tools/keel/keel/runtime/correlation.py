"""The correlation id of the call being handled (`x-request-id`).

The caller's `x-request-id` if it sent one, else an id created at this edge on first use; it
goes into every log line of the call and to every call made while handling it.
"""

from __future__ import annotations

from keel.runtime.propagation import CORRELATION_HEADER as HEADER
from keel.runtime.propagation import correlation_id as current
from keel.runtime.propagation import new_id

__all__ = ["HEADER", "current", "new_id"]
