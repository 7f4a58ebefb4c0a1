"""`google.api.http` path templates: parse into typed segments once, then match paths.

Grammar (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

`**` matches zero or more segments and may stand anywhere, once per template (grpc-gateway's
rule; Envoy's transcoder also allows one, followed by literals only). What follows it has a fixed
number of segments, so they are matched from the end of the path: `/v1/{name=**/sessions/*}`
takes `/v1/a/b/sessions/s1` as `name=a/b/sessions/s1`, and `/v1/sessions/s1` as
`name=sessions/s1`.

`str()` of a parsed template gives it back in canonical form (`{name}` for `{name=*}`). The
generator parses every template at generation time, so a bad one fails `keel gen` naming the
file and method; the gateway compiles the parsed form into a matcher once at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LITERAL = re.compile(r"[A-Za-z0-9\-._~%!$&'()+,;=@]+")


class InvalidTemplateError(ValueError):
    """A path template that does not follow the HttpRule grammar."""

    def __init__(self, template: str, reason: str) -> None:
        super().__init__(f"invalid HTTP path template {template!r}: {reason}")
        self.template = template
        self.reason = reason


@dataclass(frozen=True)
class Literal:
    value: str

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Wildcard:
    """`*`: exactly one segment."""

    def __str__(self) -> str:
        return "*"


@dataclass(frozen=True)
class DeepWildcard:
    """`**`: zero or more segments (at most one per template); a value keeps its slashes."""

    def __str__(self) -> str:
        return "**"


Plain = Literal | Wildcard | DeepWildcard


@dataclass(frozen=True)
class Variable:
    """`{field.path=segments}`; `segments` is `*` when the template wrote `{field.path}`."""

    field_path: tuple[str, ...]
    segments: tuple[Plain, ...]

    def __str__(self) -> str:
        name = ".".join(self.field_path)
        if self.segments == (Wildcard(),):
            return "{" + name + "}"
        return "{" + name + "=" + "/".join(map(str, self.segments)) + "}"

    @property
    def multi_segment(self) -> bool:
        return self.segments != (Wildcard(),)


Segment = Plain | Variable


@dataclass(frozen=True)
class Template:
    segments: tuple[Segment, ...]
    verb: str = ""

    def __str__(self) -> str:
        text = "/" + "/".join(map(str, self.segments))
        return f"{text}:{self.verb}" if self.verb else text

    @property
    def variables(self) -> tuple[Variable, ...]:
        return tuple(s for s in self.segments if isinstance(s, Variable))

    def flat(self) -> tuple[tuple[Plain, Variable | None], ...]:
        """Every path segment with the variable it belongs to (None outside variables)."""
        out: list[tuple[Plain, Variable | None]] = []
        for segment in self.segments:
            if isinstance(segment, Variable):
                out.extend((inner, segment) for inner in segment.segments)
            else:
                out.append((segment, None))
        return tuple(out)


class _Parser:
    def __init__(self, template: str) -> None:
        self.template = template
        self.pos = 0

    def fail(self, reason: str) -> InvalidTemplateError:
        return InvalidTemplateError(self.template, f"{reason} (at character {self.pos})")

    def peek(self, text: str) -> bool:
        return self.template.startswith(text, self.pos)

    def expect(self, text: str) -> None:
        if not self.peek(text):
            raise self.fail(f"expected {text!r}")
        self.pos += len(text)

    def token(self, pattern: re.Pattern[str], what: str) -> str:
        match = pattern.match(self.template, self.pos)
        if match is None:
            raise self.fail(f"expected {what}")
        self.pos = match.end()
        return match.group()

    def plain(self) -> Plain:
        if self.peek("**"):
            self.pos += 2
            return DeepWildcard()
        if self.peek("*"):
            self.pos += 1
            return Wildcard()
        return Literal(self.token(_LITERAL, "a literal, '*', '**' or '{variable}'"))

    def segments(self, *, inside: bool) -> list[Segment]:
        found: list[Segment] = []
        while True:
            if self.peek("{"):
                if inside:
                    raise self.fail("variables cannot nest")
                found.append(self.variable())
            else:
                found.append(self.plain())
            if not self.peek("/"):
                return found
            self.pos += 1

    def variable(self) -> Variable:
        self.expect("{")
        path = [self.token(_IDENT, "a field name")]
        while self.peek("."):
            self.pos += 1
            path.append(self.token(_IDENT, "a field name"))
        inner: list[Segment] = [Wildcard()]
        if self.peek("="):
            self.pos += 1
            inner = self.segments(inside=True)
        self.expect("}")
        plain = tuple(s for s in inner if not isinstance(s, Variable))
        return Variable(tuple(path), plain)

    def parse(self) -> Template:
        self.expect("/")
        segments = self.segments(inside=False)
        verb = ""
        if self.peek(":"):
            self.pos += 1
            verb = self.token(_LITERAL, "a custom verb")
        if self.pos != len(self.template):
            raise self.fail(f"unexpected {self.template[self.pos]!r}")
        template = Template(tuple(segments), verb)
        if sum(isinstance(segment, DeepWildcard) for segment, _ in template.flat()) > 1:
            raise InvalidTemplateError(self.template, "'**' may appear only once in a template")
        names = [".".join(v.field_path) for v in template.variables]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidTemplateError(self.template, f"variable {duplicates[0]} appears twice")
        return template


def parse(template: str) -> Template:
    """The typed form of `template`, or InvalidTemplateError saying what is wrong and where."""
    return _Parser(template).parse()


def _decode(value: str, *, keep_slashes: bool) -> str:
    if keep_slashes:  # multi-segment variables keep %2F encoded (reserved expansion)
        return "%2F".join(unquote(part) for part in re.split("%2[fF]", value))
    return unquote(value)


class Matcher:
    """A compiled template: `match(path)` gives the variables' values, or None.

    Paths without percent-escapes (nearly all) are matched by one regular expression; the
    others segment by segment, decoding each. Both split a path the same way: the segments
    before `**` from the start, those after it from the end, `**` the (possibly empty) rest.
    """

    def __init__(self, template: Template) -> None:
        self.template = template
        self._flat = template.flat()
        deep = [i for i, (segment, _) in enumerate(self._flat) if isinstance(segment, DeepWildcard)]
        self._deep: int | None = deep[0] if deep else None
        self._regex = re.compile(self._pattern())
        # Per capture group: the variable it feeds (None: none) and whether it is the `**` one.
        self._slots = tuple(
            (variable, isinstance(segment, DeepWildcard)) for segment, variable in self._flat
        )
        self._names = {
            variable: ".".join(variable.field_path) for _, variable in self._flat if variable
        }
        # When each variable is one `*` segment (the common case): its name and capture group.
        counts = [variable for _, variable in self._flat if variable is not None]
        self._single: tuple[tuple[str, int], ...] | None = None
        if self._deep is None and len(counts) == len(set(counts)):
            self._single = tuple(
                (self._names[variable], group)
                for group, (_, variable) in enumerate(self._flat, start=1)
                if variable is not None
            )
        self._one = self._single[0] if self._single and len(self._single) == 1 else None
        """The name and capture group of the template's one variable, if it has one only."""

    def _pattern(self) -> str:
        """One capture group per path segment; `**`'s group holds its segments, each after a `/`.

        The regex backtracks out of `**` until the segments after it fit: as they have a fixed
        count, there is one way at most, the same split `_match_escaped` makes.
        """
        pattern = "(?=/)" if self._deep == 0 else ""  # `/**` must not match an empty path
        for segment, _ in self._flat:
            if isinstance(segment, DeepWildcard):
                pattern += "((?:/[^/]*)*)"
            elif isinstance(segment, Wildcard):
                pattern += "/([^/]+)"
            else:
                pattern += "/(" + re.escape(segment.value) + ")"
        if self.template.verb:
            pattern += re.escape(":" + self.template.verb)
        return pattern

    def match(self, path: str) -> dict[str, str] | None:
        """Field path → percent-decoded value for a request path (with its `:verb`, if any)."""
        if "%" in path:
            return self._match_escaped(path)
        found = self._regex.fullmatch(path)
        if found is None:
            return None
        if self._one is not None:  # (one variable: no comprehension, a call less)
            return {self._one[0]: found[self._one[1]]}
        if self._single is not None:
            return {name: found[group] for name, group in self._single}
        values: dict[Variable, list[str]] = {}
        for (variable, deep), text in zip(self._slots, found.groups(), strict=True):
            if variable is not None:
                taken = values.setdefault(variable, [])
                if not deep:
                    taken.append(text)
                elif text:  # `**` matched one segment or more: drop the leading `/`
                    taken.append(text[1:])
        return {self._names[variable]: "/".join(texts) for variable, texts in values.items()}

    def _match_escaped(self, path: str) -> dict[str, str] | None:
        if self.template.verb:
            suffix = ":" + self.template.verb
            if not path.endswith(suffix):
                return None
            path = path[: -len(suffix)]
        if not path.startswith("/"):
            return None
        parts = path[1:].split("/")
        fixed = len(self._flat)
        if self._deep is None:
            if len(parts) != fixed:
                return None
            pieces = [[part] for part in parts]
        else:
            deep, extra = self._deep, len(parts) - (fixed - 1)
            if extra < 0:
                return None
            pieces = [
                *([part] for part in parts[:deep]),
                parts[deep : deep + extra],
                *([part] for part in parts[deep + extra :]),
            ]
        values: dict[Variable, list[str]] = {}
        for (segment, variable), taken in zip(self._flat, pieces, strict=True):
            if not isinstance(segment, DeepWildcard):
                part = taken[0]
                if isinstance(segment, Literal) and unquote(part) != segment.value:
                    return None
                if isinstance(segment, Wildcard) and not part:
                    return None
            if variable is not None:
                values.setdefault(variable, []).extend(taken)
        return {
            self._names[variable]: _decode("/".join(parts_), keep_slashes=variable.multi_segment)
            for variable, parts_ in values.items()
        }


def compile_template(template: str) -> Matcher:
    """Parse and compile `template` (InvalidTemplateError if it is not valid)."""
    return Matcher(parse(template))
