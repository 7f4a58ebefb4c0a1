"""Docstrings in generated code: a proto comment of any length gives lines that fit the line
length (ruff's E501 on generated modules), with its words and paragraphs kept."""

from __future__ import annotations

from keel.codegen.text import LINE_LENGTH, docstring

LONG = (
    "Mark an order shipped. Internal: the warehouse calls it over gRPC only (no REST route), "
    "with a token that carries the orders.ship scope (a customer's token lacks it)."
)


def _words(lines: list[str]) -> list[str]:
    return " ".join(lines).replace('"""', " ").split()


def test_a_long_comment_is_wrapped_to_the_line_length_keeping_its_words() -> None:
    for indent in ("", "    ", "        "):
        lines = docstring(LONG, indent)
        assert len(lines) > 1
        assert all(len(line) <= LINE_LENGTH for line in lines), lines
        assert _words(lines) == LONG.split()
        assert all(line.startswith(indent) for line in lines if line)


def test_paragraphs_and_indented_lines_keep_their_shape() -> None:
    text = f"Summary.\n\n{LONG}\n\n    example = call(x)  # kept as written"
    lines = docstring(text, "    ")
    assert lines[:3] == ['    """Summary.', "", lines[2]]
    assert "        example = call(x)  # kept as written" in lines
    assert lines[-1] == '    """'


def test_a_short_comment_stays_one_line_and_a_long_word_stays_whole() -> None:
    assert docstring("Look a product up.", "    ") == ['    """Look a product up."""']
    url = "https://example.com/" + "x" * 120
    lines = docstring(f"See {url} for more.", "    ")
    assert f"    {url}" in lines  # cannot be wrapped: left whole (ruff lets a URL run long)


def test_a_comment_that_fits_only_without_closing_quotes_moves_them() -> None:
    text = "x" * (LINE_LENGTH - 4 - 4)  # fits after the opening quotes, not with the closing
    lines = docstring(text, "    ")
    assert all(len(line) <= LINE_LENGTH for line in lines)
    assert lines[-1] == '    """'
