"""Python source text: docstrings and string literals as generated modules write them."""

from __future__ import annotations

import textwrap

LINE_LENGTH = 100
"""The longest line generated code writes (ruff's E501 at the workspace's setting): a proto
comment longer than that is wrapped, its words kept in order."""


def _fill(line: str, width: int) -> list[str]:
    """`line` wrapped at spaces to `width`, each piece with its indentation (a single word
    longer than `width`, a URL, stays whole)."""
    lead = line[: len(line) - len(line.lstrip())]
    return textwrap.wrap(
        line.strip(),
        width,
        initial_indent=lead,
        subsequent_indent=lead,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [line]


def _wrapped(lines: list[str], width: int, first: int) -> list[str]:
    """`lines`, each longer than `width` wrapped; the first line to `first` (the opening
    quotes take room on it alone)."""
    out: list[str] = []
    for index, line in enumerate(lines):
        limit = first if index == 0 else width
        if len(line) <= limit:
            out.append(line)
        elif index == 0:
            head, *rest = _fill(line, first)
            out.append(head)
            if rest:
                lead = line[: len(line) - len(line.lstrip())]
                out += _fill(lead + " ".join(r.strip() for r in rest), width)
        else:
            out += _fill(line, width)
    return out


def docstring(text: str, indent: str) -> list[str]:
    """`text` as a docstring's lines at `indent` (none for no text), no line longer than
    LINE_LENGTH where it can be wrapped."""
    if not text:
        return []
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    width = LINE_LENGTH - len(indent)
    lines = _wrapped(text.split("\n"), width, width - 3)
    single = f'{indent}"""{lines[0]}"""'
    if len(lines) == 1 and not text.endswith('"') and len(single) <= LINE_LENGTH:
        return [single]
    body = [f"{indent}{line}" if line else "" for line in lines]
    return [f'{indent}"""{lines[0]}', *body[1:], f'{indent}"""']


def literal(value: str) -> str:
    """`value` as a double-quoted Python string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
