"""google.api.http path templates: parse, print back, match (keel.httprule)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from keel.httprule import (
    DeepWildcard,
    InvalidTemplateError,
    Literal,
    Matcher,
    Template,
    Variable,
    Wildcard,
    compile_template,
    parse,
)


def test_parses_the_grammar() -> None:
    template = parse("/v1/{name=shelves/*/books/*}:move")
    assert template == Template(
        (
            Literal("v1"),
            Variable(("name",), (Literal("shelves"), Wildcard(), Literal("books"), Wildcard())),
        ),
        verb="move",
    )
    assert parse("/v1/{book.name}").variables == (Variable(("book", "name"), (Wildcard(),)),)
    assert parse("/files/**").segments == (Literal("files"), DeepWildcard())


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("v1/books", "expected '/'"),
        ("/v1/{name", "expected '}'"),
        ("/v1/{name=a/{b}}", "variables cannot nest"),
        ("/v1/**/books", "'**' must be the last segment"),
        ("/v1/{1name}", "expected a field name"),
        ("/v1//books", "expected a literal"),
        ("/v1/{a}/{a}", "variable a appears twice"),
        ("/v1/books:", "expected a custom verb"),
        ("/v1/books?x=1", "unexpected '?'"),
    ],
)
def test_bad_templates_say_what_is_wrong(template: str, reason: str) -> None:
    with pytest.raises(InvalidTemplateError) as caught:
        parse(template)
    assert reason in str(caught.value)
    assert template in str(caught.value)


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/books/{id}", "/v1/books/42", {"id": "42"}),
        ("/v1/books/{id}", "/v1/books/42/x", None),
        ("/v1/books/{id}", "/v1/shelves/42", None),
        ("/v1/books/{id}", "/v1/books/", None),
        (
            "/v1/{name=shelves/*/books/*}",
            "/v1/shelves/s1/books/b2",
            {"name": "shelves/s1/books/b2"},
        ),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/notes/b2", None),
        ("/v1/orders/{order_id}:cancel", "/v1/orders/o1:cancel", {"order_id": "o1"}),
        ("/v1/orders/{order_id}:cancel", "/v1/orders/o1", None),
        ("/files/{path=**}", "/files/a/b/c.txt", {"path": "a/b/c.txt"}),
        ("/files/{path=**}", "/files", {"path": ""}),
        ("/v1/books/{id}", "/v1/books/a%2Fb%20c", {"id": "a/b c"}),
        ("/files/{path=**}", "/files/a%2Fb/c%20d", {"path": "a%2Fb/c d"}),
        ("/v1/{book.name}", "/v1/moby", {"book.name": "moby"}),
    ],
)
def test_matching(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert compile_template(template).match(path) == expected


_literal = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~", min_size=1, max_size=8)
_ident = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6)
_plain = st.one_of(_literal.map(Literal), st.just(Wildcard()))


@st.composite
def _templates(draw: st.DrawFn) -> Template:
    segments: list[Literal | Wildcard | DeepWildcard | Variable] = draw(
        st.lists(_plain, min_size=1, max_size=4)
    )
    names: set[str] = set()
    for _ in range(draw(st.integers(0, 2))):
        path = tuple(draw(st.lists(_ident, min_size=1, max_size=3)))
        if ".".join(path) in names:
            continue
        names.add(".".join(path))
        inner = tuple(draw(st.lists(_plain, min_size=1, max_size=3)))
        segments.insert(draw(st.integers(0, len(segments))), Variable(path, inner))
    if draw(st.booleans()):
        segments.append(DeepWildcard())
    verb = draw(st.one_of(st.just(""), _literal))
    return Template(tuple(segments), verb)


@given(_templates())
def test_printing_and_parsing_round_trip(template: Template) -> None:
    assert parse(str(template)) == template
    assert str(parse(str(template))) == str(template)


_segment_text = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~:", min_size=0, max_size=6
)


@st.composite
def _paths_for(draw: st.DrawFn, template: Template) -> tuple[str, bool]:
    """A path built to fit `template`, sometimes altered so that it may no longer fit."""
    parts: list[str] = []
    for segment, _ in template.flat():
        if isinstance(segment, Literal):
            parts.append(segment.value)
        elif isinstance(segment, Wildcard):
            parts.append(draw(_segment_text.filter(bool)))
        else:
            parts += draw(st.lists(_segment_text, max_size=3))
    path = "/" + "/".join(parts) + (f":{template.verb}" if template.verb else "")
    altered = draw(st.booleans())
    if altered:
        cut = draw(st.integers(0, len(path)))
        path = path[:cut] + draw(_segment_text | st.just("/")) + path[cut:]
    return path, altered


@given(st.data())
def test_the_fast_matcher_agrees_with_segment_by_segment_matching(data: st.DataObject) -> None:
    template = data.draw(_templates())
    path, altered = data.draw(_paths_for(template))
    matcher = Matcher(template)
    found = matcher.match(path)
    assert found == matcher._match_escaped(path)
    if not altered:
        assert found is not None, f"{path} was built to fit {template}"
