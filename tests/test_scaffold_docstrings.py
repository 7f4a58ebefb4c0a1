"""keel.scaffold.docstrings: docstring paragraphs over the line limit are wrapped, nothing else."""

from __future__ import annotations

import ast

from keel.scaffold.docstrings import wrap

_LONG = " ".join(["word"] * 30)  # 149 characters


def test_only_paragraphs_over_the_limit_are_wrapped_and_the_meaning_kept() -> None:
    source = (
        f'"""{_LONG}\n\nshort paragraph,\n  kept as written."""\n\n\n'
        f"class Thing:\n"
        f'    """{_LONG}."""\n\n'
        f"    def act(self) -> str:\n"
        f'        """short."""\n'
        f'        return "{_LONG}"\n'
    )
    wrapped = wrap(source, width=60)
    assert all(
        len(line) <= 60
        for line in wrapped.splitlines()
        if not line.lstrip().startswith("return")  # code is not a docstring: left alone
    )
    assert "short paragraph,\n  kept as written." in wrapped
    assert '        """short."""\n' in wrapped
    before, after = ast.parse(source), ast.parse(wrapped)
    assert ast.get_docstring(after).split() == ast.get_docstring(before).split()  # type: ignore[union-attr]
    classes = [n for n in ast.walk(after) if isinstance(n, ast.ClassDef)]
    said = ast.get_docstring(classes[0]) or ""
    assert "\n" in said  # wrapped over lines,
    assert said.split() == f"{_LONG}.".split()  # the same words
    assert wrapped.splitlines()[-1] == f'        return "{_LONG}"'


def test_text_within_the_limit_or_not_python_is_unchanged() -> None:
    fine = '"""A module."""\n\nX = 1\n'
    assert wrap(fine) == fine
    broken = f'"""{_LONG * 2}\ndef (:\n'
    assert wrap(broken) == broken
