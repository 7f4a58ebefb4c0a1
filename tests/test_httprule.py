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
    assert parse("/v1/{name=**/sessions/*}").segments == (
        Literal("v1"),
        Variable(("name",), (DeepWildcard(), Literal("sessions"), Wildcard())),
    )


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("v1/books", "expected '/'"),
        ("/v1/{name", "expected '}'"),
        ("/v1/{name=a/{b}}", "variables cannot nest"),
        ("/v1/**/books/**", "'**' may appear only once"),
        ("/v1/{a=**}/{b=x/**}", "'**' may appear only once"),
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
        ("/v1/**/books/{id}", "/v1/a/b/books/7", {"id": "7"}),
        ("/v1/**/books/{id}", "/v1/books/7", {"id": "7"}),
        ("/v1/**/books/{id}", "/v1/a/b/books", None),
        ("/v1/{path=**}:get", "/v1/a/b:get", {"path": "a/b"}),
        ("/v1/{path=**}:get", "/v1:get", {"path": ""}),
        ("/v1/{path=**}:get", "/v1/a/b", None),
    ],
)
def test_matching(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert compile_template(template).match(path) == expected


_literal = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~", min_size=1, max_size=8)
_ident = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6)
_plain = st.one_of(_literal.map(Literal), st.just(Wildcard()))


@st.composite
def _templates(draw: st.DrawFn, *, deep: bool | None = None) -> Template:
    """A valid template; with `deep`, one `**` somewhere (inside a variable or not), or none."""
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
    with_deep: bool = draw(st.booleans()) if deep is None else deep
    if with_deep:
        variables = [i for i, s in enumerate(segments) if isinstance(s, Variable)]
        inside: bool = draw(st.booleans())
        if variables and inside:  # {x=a/**/b}
            index = draw(st.sampled_from(variables))
            variable = segments[index]
            assert isinstance(variable, Variable)
            inner_list = list(variable.segments)
            inner_list.insert(draw(st.integers(0, len(inner_list))), DeepWildcard())
            segments[index] = Variable(variable.field_path, tuple(inner_list))
        else:
            segments.insert(draw(st.integers(0, len(segments))), DeepWildcard())
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
def _fitting_paths(draw: st.DrawFn, template: Template) -> tuple[str, dict[str, str]]:
    """A path built to fit `template`, and the variable values it was built from."""
    parts: list[str] = []
    values: dict[str, list[str]] = {}
    for segment, variable in template.flat():
        if isinstance(segment, Literal):
            taken = [segment.value]
        elif isinstance(segment, Wildcard):
            taken = [draw(_segment_text.filter(bool))]
        else:
            taken = draw(st.lists(_segment_text, max_size=3))
        parts += taken
        if variable is not None:
            values.setdefault(".".join(variable.field_path), []).extend(taken)
    path = "/" + "/".join(parts) + (f":{template.verb}" if template.verb else "")
    return path, {name: "/".join(taken) for name, taken in values.items()}


@st.composite
def _paths_for(draw: st.DrawFn, template: Template) -> tuple[str, bool]:
    """A path built to fit `template`, sometimes altered so that it may no longer fit."""
    path, _ = draw(_fitting_paths(template))
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


@given(st.data())
def test_both_matchers_agree_with_deep_wildcards_anywhere(data: st.DataObject) -> None:
    """`**` first, in the middle or last, bare or in a variable: one answer from both paths."""
    template = data.draw(_templates(deep=True))
    path, altered = data.draw(_paths_for(template))
    matcher = Matcher(template)
    found = matcher.match(path)
    assert found == matcher._match_escaped(path)
    # The same path with `~` percent-encoded takes the segment-wise route to the same answer.
    verb = f":{template.verb}" if template.verb and path.endswith(f":{template.verb}") else ""
    escaped = path[: len(path) - len(verb)].replace("~", "%7E") + verb
    assert matcher.match(escaped) == found
    if not altered:
        assert found is not None, f"{path} was built to fit {template}"


@given(st.data())
def test_matching_gives_back_the_values_a_path_was_built_from(data: st.DataObject) -> None:
    """The segments after `**` are taken from the end, so the split is the one built."""
    template = data.draw(_templates(deep=True))
    path, values = data.draw(_fitting_paths(template))
    assert Matcher(template).match(path) == values
