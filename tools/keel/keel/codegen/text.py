"""Python source text: docstrings and string literals as generated modules write them."""

from __future__ import annotations


def docstring(text: str, indent: str) -> list[str]:
    """`text` as a docstring's lines at `indent` (none for no text)."""
    if not text:
        return []
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = text.split("\n")
    if len(lines) == 1 and not text.endswith('"'):
        return [f'{indent}"""{text}"""']
    body = [f"{indent}{line}" if line else "" for line in lines]
    return [f'{indent}"""{lines[0]}', *body[1:], f'{indent}"""']


def literal(value: str) -> str:
    """`value` as a double-quoted Python string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
