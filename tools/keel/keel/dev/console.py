"""`keel dev`'s console: its own lines, and each child's lines prefixed with its colored name."""

from __future__ import annotations

import sys

COLORS = ("\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m")
"""One per service, in discovery order (cycled)."""
BOLD = "\033[1m"
RESET = "\033[0m"


def say(text: str) -> None:
    """One line of keel dev's own, flushed at once."""
    sys.stdout.write(f"keel dev: {text}\n")
    sys.stdout.flush()


def prefix(name: str, color: str) -> str:
    """The column in front of each line a child prints (`   catalog │ `)."""
    return f"{color}{name:>10}{RESET} │ "


def relayed(prefix_: str, line: bytes) -> None:
    """Write one line a child printed, behind its prefix."""
    text = line.decode(errors="replace")
    sys.stdout.write(prefix_ + (text if text.endswith("\n") else text + "\n"))
    sys.stdout.flush()
