"""`google.api.http` path templates: parse into typed segments once, then match paths.

Grammar (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

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
    """`**`: zero or more segments, only at the end of the path."""

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
        flat = template.flat()
        for index, (segment, _) in enumerate(flat):
            if isinstance(segment, DeepWildcard) and index != len(flat) - 1:
                raise InvalidTemplateError(self.template, "'**' must be the last segment")
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
    others segment by segment, decoding each.
    """

    def __init__(self, template: Template) -> None:
        self.template = template
        self._flat = template.flat()
        self._deep = bool(self._flat) and isinstance(self._flat[-1][0], DeepWildcard)
        self._regex = re.compile(self._pattern())
        self._names = {
            variable: ".".join(variable.field_path) for _, variable in self._flat if variable
        }

    def _pattern(self) -> str:
        """One capture group per path segment; `**` captures the rest, slashes and all."""
        pattern = "^"
        for segment, _ in self._flat:
            if isinstance(segment, DeepWildcard):
                pattern += "(?:/(.*))?"
            elif isinstance(segment, Wildcard):
                pattern += "/([^/]+)"
            else:
                pattern += "/(" + re.escape(segment.value) + ")"
        if self.template.verb:
            pattern += re.escape(":" + self.template.verb)
        return pattern + "$"

    def match(self, path: str) -> dict[str, str] | None:
        """Field path → percent-decoded value for a request path (with its `:verb`, if any)."""
        if "%" in path:
            return self._match_escaped(path)
        found = self._regex.match(path)
        if found is None:
            return None
        if not self._names:
            return {}
        values: dict[Variable, list[str]] = {}
        for (_, variable), text in zip(self._flat, found.groups(), strict=True):
            if variable is not None:
                taken = values.setdefault(variable, [])
                if text is not None:
                    taken.append(text)
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
        fixed = len(self._flat) - (1 if self._deep else 0)
        if len(parts) < fixed or (not self._deep and len(parts) != fixed):
            return None
        values: dict[Variable, list[str]] = {}
        for index, (segment, variable) in enumerate(self._flat):
            if isinstance(segment, DeepWildcard):
                taken = parts[index:]
            else:
                part = parts[index]
                if isinstance(segment, Literal) and unquote(part) != segment.value:
                    return None
                if isinstance(segment, Wildcard) and not part:
                    return None
                taken = [part]
            if variable is not None:
                values.setdefault(variable, []).extend(taken)
        return {
            ".".join(variable.field_path): _decode(
                "/".join(parts_), keep_slashes=variable.multi_segment
            )
            for variable, parts_ in values.items()
        }


def compile_template(template: str) -> Matcher:
    """Parse and compile `template` (InvalidTemplateError if it is not valid)."""
    return Matcher(parse(template))
