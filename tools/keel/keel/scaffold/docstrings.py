"""Docstrings of rendered Python re-wrapped to the line limit: a service's name goes into its
templates' docstrings, so a long name would make lines ruff's E501 refuses (and ruff's
formatter does not wrap prose). Only paragraphs with a line over the limit change."""

from __future__ import annotations

import ast
import textwrap

WIDTH = 100
"""The repository's line limit (pyproject.toml's [tool.ruff] line-length)."""

_DEFINITIONS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def wrap(source: str, width: int = WIDTH) -> str:
    """`source` with each docstring paragraph that has a line over `width` wrapped to it
    (Python that does not parse is returned as it is)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    lines = source.splitlines(keepends=True)
    spans = [span for node in ast.walk(tree) if (span := _docstring(node)) is not None]
    for start, end, indent in sorted(spans, reverse=True):
        block = lines[start:end]
        if _too_long(block, width):
            lines[start:end] = _rewrapped(block, indent, width)
    return "".join(lines)


def _too_long(lines: list[str], width: int) -> bool:
    return any(len(line.rstrip("\n")) > width for line in lines)


def _docstring(node: ast.AST) -> tuple[int, int, str] | None:
    """The lines (0-based start, end) and indentation of `node`'s docstring, if it has one."""
    if not isinstance(node, _DEFINITIONS) or not node.body:
        return None
    first = node.body[0]
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)):
        return None
    if not isinstance(first.value.value, str) or first.end_lineno is None:
        return None
    return first.lineno - 1, first.end_lineno, " " * first.col_offset


def _rewrapped(block: list[str], indent: str, width: int) -> list[str]:
    """The docstring's lines, each paragraph with a line over `width` wrapped to it."""
    out: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if _too_long(paragraph, width):
            words = " ".join(line.strip() for line in paragraph)
            wrapped = textwrap.wrap(
                words,
                width=width - len(indent),
                break_long_words=False,
                break_on_hyphens=False,
            )
            out.extend(f"{indent}{line}\n" for line in wrapped)
        else:
            out.extend(paragraph)
        paragraph.clear()

    for line in block:
        if line.strip():
            paragraph.append(line)
        else:
            flush()
            out.append(line)
    flush()
    return out
