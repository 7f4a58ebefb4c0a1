"""Strings that match a regular expression: a small sampler over Python's own regex parser.

It covers the constructs protovalidate `string.pattern` rules use in practice (literals,
classes, ranges, `\\d \\w \\s`, `.`, groups, alternation, `? * + {m,n}`, anchors); a pattern it
cannot sample raises ValueError. Unbounded repeats stop at a few more than their minimum.
"""

from __future__ import annotations

import functools
import importlib
import random
import re
import string
from typing import Any

c: Any = importlib.import_module("re._constants")
parser: Any = importlib.import_module("re._parser")

_CATEGORIES = {
    c.CATEGORY_DIGIT: string.digits,
    c.CATEGORY_NOT_DIGIT: string.ascii_letters,
    c.CATEGORY_SPACE: " ",
    c.CATEGORY_NOT_SPACE: string.ascii_letters + string.digits,
    c.CATEGORY_WORD: string.ascii_letters + string.digits + "_",
    c.CATEGORY_NOT_WORD: "-.,;",
}
_PRINTABLE = string.ascii_letters + string.digits + "-_."
_EXTRA_REPEATS = 3


def sample(pattern: str, rng: random.Random) -> str:
    """A string that `re.search(pattern, ...)` matches, drawn from `rng`."""
    for _ in range(20):
        found = _emit(_parsed(pattern), rng)
        if re.search(pattern, found):
            return found
    raise ValueError(f"cannot sample a string matching {pattern!r}")


@functools.lru_cache(maxsize=256)
def _parsed(pattern: str) -> Any:
    return parser.parse(pattern)


def _emit(items: Any, rng: random.Random) -> str:
    return "".join(_one(op, arg, rng) for op, arg in items)


def _one(op: Any, arg: Any, rng: random.Random) -> str:
    if op is c.LITERAL:
        return chr(arg)
    if op is c.NOT_LITERAL:
        return rng.choice([ch for ch in _PRINTABLE if ord(ch) != arg])
    if op is c.ANY:
        return rng.choice(_PRINTABLE)
    if op is c.IN:
        return _in(arg, rng)
    if op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
        low, high, body = arg
        top = low + _EXTRA_REPEATS if high is c.MAXREPEAT else high
        return "".join(_emit(body, rng) for _ in range(rng.randint(low, max(low, top))))
    if op is c.SUBPATTERN:
        return _emit(arg[-1], rng)
    if op is getattr(c, "ATOMIC_GROUP", None):
        return _emit(arg, rng)
    if op is c.BRANCH:
        return _emit(rng.choice(arg[1]), rng)
    if op in (c.AT, c.ASSERT, c.ASSERT_NOT):
        return ""
    if op is c.CATEGORY:
        return rng.choice(_CATEGORIES.get(arg, _PRINTABLE))
    raise ValueError(f"unsupported regular expression construct {op}")


def _in(items: Any, rng: random.Random) -> str:
    allowed: list[str] = []
    negate = False
    for op, arg in items:
        if op is c.NEGATE:
            negate = True
        elif op is c.LITERAL:
            allowed.append(chr(arg))
        elif op is c.RANGE:
            low, high = arg
            allowed += [chr(x) for x in range(low, min(high, low + 200) + 1)]
        elif op is c.CATEGORY:
            allowed += list(_CATEGORIES.get(arg, _PRINTABLE))
    if negate:
        allowed = [ch for ch in _PRINTABLE if ch not in allowed]
    if not allowed:
        raise ValueError("an empty character class")
    return rng.choice(allowed)
