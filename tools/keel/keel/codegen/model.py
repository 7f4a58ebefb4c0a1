"""CodeGeneratorRequest → a validated, frozen model of the services to generate.

All checks happen here, so rendering cannot fail; errors name the proto file and the symbol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from keel import httprule
from keel.codegen import names
from keel.options.v1 import options_pb2

if TYPE_CHECKING:
    from keel.codegen.events import Event

# googleapis-common-protos' stubs type the extension loosely; it is MethodOptions → HttpRule.
_HTTP_EXTENSION: Any = annotations_pb2.http
_SERVICE_FIELD = descriptor_pb2.FileDescriptorProto.SERVICE_FIELD_NUMBER
_METHOD_FIELD = descriptor_pb2.ServiceDescriptorProto.METHOD_FIELD_NUMBER
_HTTP_VERBS = ("get", "put", "post", "delete", "patch")
_IDEMPOTENCY = {
    descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN: "UNKNOWN",
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS: "NO_SIDE_EFFECTS",
    descriptor_pb2.MethodOptions.IDEMPOTENT: "IDEMPOTENT",
}
_ACCESS = {
    options_pb2.ACCESS_UNSPECIFIED: "UNSPECIFIED",
    options_pb2.ACCESS_PUBLIC: "PUBLIC",
    options_pb2.ACCESS_AUTHENTICATED: "AUTHENTICATED",
}


class CodegenError(Exception):
    """A proto that Keel cannot generate for; the message names file (`file:line:column` when
    the position is known) and symbol."""

    def __init__(
        self, file: str, symbol: str, reason: str, position: tuple[int, int] | None = None
    ) -> None:
        where = f"{file}:{position[0]}:{position[1]}" if position else file
        super().__init__(f"{where}: {symbol}: {reason}")
        self.file = file
        self.symbol = symbol
        self.reason = reason
        self.position = position


@dataclass(frozen=True)
class TypeRef:
    """A message type as generated code names it: `module` (a _pb2 module) and `name` in it."""

    full_name: str
    module: str
    name: str


@dataclass(frozen=True)
class Http:
    method: str
    path: str
    body: str
    response_body: str


@dataclass(frozen=True)
class Auth:
    access: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class Method:
    name: str
    python_name: str
    constant: str
    client_streaming: bool
    server_streaming: bool
    input: TypeRef
    output: TypeRef
    idempotency: str
    http: tuple[Http, ...]
    timeout: float | None
    auth: Auth | None
    comment: str
    deprecated: bool

    @property
    def kind(self) -> str:
        """The RpcKind member name: UNARY_UNARY, UNARY_STREAM, STREAM_UNARY or STREAM_STREAM."""
        client = "STREAM" if self.client_streaming else "UNARY"
        server = "STREAM" if self.server_streaming else "UNARY"
        return f"{client}_{server}"


@dataclass(frozen=True)
class Service:
    name: str
    full_name: str
    constant: str
    methods: tuple[Method, ...]
    default_timeout: float | None
    auth: Auth | None
    comment: str
    deprecated: bool
    publishes: tuple[Event, ...] = ()
    subscribes: tuple[Event, ...] = ()


@dataclass(frozen=True)
class File:
    proto: str
    module: str
    services: tuple[Service, ...]
    events: tuple[Event, ...] = ()
    """The events (messages with the event option) declared in the file."""

    @property
    def imported_modules(self) -> tuple[str, ...]:
        """The _pb2 (and other files' _keel) modules the generated file refers to, sorted."""
        modules = {
            ref.module
            for service in self.services
            for method in service.methods
            for ref in (method.input, method.output)
        }
        for event in self.events_used:
            modules.add(event.message.module)
            if event.module != self.module:
                modules.add(event.module)
        return tuple(sorted(modules))

    @property
    def events_used(self) -> tuple[Event, ...]:
        """Declared, published and subscribed events, each once."""
        found = {e.full_name: e for e in self.events}
        for service in self.services:
            found.update((e.full_name, e) for e in (*service.publishes, *service.subscribes))
        return tuple(found.values())


class ReachableFiles:
    """An index of a plugin request's files that fills in lazily: `reach(file)` indexes a file
    and everything it imports, each file once (`_index`), so the request's other files (a large
    workspace has thousands) cost nothing."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self.files = {file.name: file for file in files}
        self._reached: set[str] = set()

    def reach(self, name: str) -> None:
        pending = [name]
        while pending:
            current = pending.pop()
            if current in self._reached:
                continue
            self._reached.add(current)
            file = self.files[current]
            self._index(file)
            pending.extend(file.dependency)

    def _index(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        raise NotImplementedError


class _Index(ReachableFiles):
    """Messages by full name, for the files reachable from the ones to generate."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        super().__init__(files)
        self.messages: dict[str, TypeRef] = {}
        self.fields: dict[str, frozenset[str]] = {}
        self.field_types: dict[str, dict[str, descriptor_pb2.FieldDescriptorProto]] = {}

    def _index(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        prefix = f".{file.package}" if file.package else ""
        self._add(names.proto_module(file.name), prefix, "", file.message_type)

    def _add(
        self,
        module: str,
        scope: str,
        local: str,
        messages: Iterable[descriptor_pb2.DescriptorProto],
    ) -> None:
        for message in messages:
            full = f"{scope}.{message.name}"
            name = f"{local}.{message.name}" if local else message.name
            self.messages[full] = TypeRef(full.lstrip("."), module, name)
            self.fields[full] = frozenset(field.name for field in message.field)
            self.field_types[full] = {field.name: field for field in message.field}
            self._add(module, full, name, message.nested_type)


def file_comments(file: descriptor_pb2.FileDescriptorProto) -> Mapping[tuple[int, ...], str]:
    """Cleaned leading (else trailing) comments of a file, by source location path."""
    return _comments(file)


def _comments(file: descriptor_pb2.FileDescriptorProto) -> Mapping[tuple[int, ...], str]:
    comments: dict[tuple[int, ...], str] = {}
    for location in file.source_code_info.location:
        text = location.leading_comments or location.trailing_comments
        if text:
            comments[tuple(location.path)] = _clean_comment(text)
    return comments


def _clean_comment(text: str) -> str:
    lines = [line.rstrip() for line in text.strip("\n").split("\n")]
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return "\n".join(line[indent:] for line in lines).strip()


def _seconds(duration: object) -> float | None:
    seconds = getattr(duration, "seconds", 0) + getattr(duration, "nanos", 0) / 1e9
    return seconds or None


def _auth(policy: options_pb2.AuthPolicy, present: bool) -> Auth | None:
    if not present:
        return None
    return Auth(_ACCESS.get(policy.access, "UNSPECIFIED"), tuple(policy.scopes))


def _field_path_checker(index: _Index, message: str) -> Callable[[tuple[str, ...]], str]:
    """A check that a path variable names a singular, non-message field of `message`."""

    def check(path: tuple[str, ...]) -> str:
        current = message
        for depth, name in enumerate(path):
            field = index.field_types.get(current, {}).get(name)
            dotted = ".".join(path)
            if field is None:
                return f"{dotted} is not a field of the request message"
            if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
                return f"{dotted} is repeated; path variables need a singular field"
            is_message = field.type == descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            if depth < len(path) - 1:
                if not is_message:
                    return f"{dotted}: {name} is not a message"
                current = field.type_name
            elif is_message:
                return f"{dotted} is a message; path variables need a scalar field"
        return ""

    return check


def _http_rules(
    rule: http_pb2.HttpRule,
    file: str,
    symbol: str,
    input_fields: frozenset[str],
    output_fields: frozenset[str],
    *,
    check_field_path: Callable[[tuple[str, ...]], str],
    nested: bool = False,
) -> tuple[Http, ...]:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise CodegenError(file, symbol, "google.api.http has no pattern (get, post, ...)")
    if pattern == "custom":
        verb, path = rule.custom.kind, rule.custom.path
        if not verb:
            raise CodegenError(file, symbol, "google.api.http custom pattern needs a kind")
    else:
        verb, path = pattern.upper(), getattr(rule, pattern)
    if not path.startswith("/"):
        raise CodegenError(file, symbol, f"HTTP path {path!r} must start with '/'")
    try:
        template = httprule.parse(path)
    except httprule.InvalidTemplateError as error:
        raise CodegenError(file, symbol, str(error)) from None
    for variable in template.variables:
        problem = check_field_path(variable.field_path)
        if problem:
            raise CodegenError(file, symbol, f"HTTP path {path!r}: {problem}")
    if rule.body not in ("", "*") and rule.body not in input_fields:
        raise CodegenError(
            file, symbol, f"HTTP body {rule.body!r} is not a field of the request message"
        )
    if rule.response_body and rule.response_body not in output_fields:
        raise CodegenError(
            file,
            symbol,
            f"HTTP response_body {rule.response_body!r} is not a field of the response message",
        )
    if nested and rule.additional_bindings:
        raise CodegenError(file, symbol, "additional_bindings may not nest")
    rules = [Http(verb, path, rule.body, rule.response_body)]
    for binding in rule.additional_bindings:
        rules.extend(
            _http_rules(
                binding,
                file,
                symbol,
                input_fields,
                output_fields,
                check_field_path=check_field_path,
                nested=True,
            )
        )
    return tuple(rules)


def _method(
    file: descriptor_pb2.FileDescriptorProto,
    service: descriptor_pb2.ServiceDescriptorProto,
    method: descriptor_pb2.MethodDescriptorProto,
    comment: str,
    index: _Index,
) -> Method:
    symbol = f"{file.package}.{service.name}.{method.name}".lstrip(".")
    types = []
    for type_name in (method.input_type, method.output_type):
        if type_name not in index.messages:
            raise CodegenError(file.name, symbol, f"unknown message type {type_name}")
        types.append(index.messages[type_name])
    options = method.options
    http: tuple[Http, ...] = ()
    if options.HasExtension(_HTTP_EXTENSION):
        http = _http_rules(
            options.Extensions[_HTTP_EXTENSION],
            file.name,
            symbol,
            index.fields[method.input_type],
            index.fields[method.output_type],
            check_field_path=_field_path_checker(index, method.input_type),
        )
    keel = options.Extensions[options_pb2.method]
    return Method(
        name=method.name,
        python_name=names.method_name(method.name),
        constant=f"_{names.constant_name(service.name, method.name)}",
        client_streaming=method.client_streaming,
        server_streaming=method.server_streaming,
        input=types[0],
        output=types[1],
        idempotency=_IDEMPOTENCY[options.idempotency_level],
        http=http,
        timeout=_seconds(keel.timeout) if keel.HasField("timeout") else None,
        auth=_auth(keel.auth, keel.HasField("auth")),
        comment=comment,
        deprecated=options.deprecated,
    )


def _service(
    file: descriptor_pb2.FileDescriptorProto,
    position: int,
    comments: Mapping[tuple[int, ...], str],
    index: _Index,
) -> Service:
    service = file.service[position]
    full_name = f"{file.package}.{service.name}".lstrip(".")
    path = (_SERVICE_FIELD, position)
    methods = tuple(
        _method(file, service, method, comments.get((*path, _METHOD_FIELD, i), ""), index)
        for i, method in enumerate(service.method)
    )
    seen: dict[str, str] = {}
    for method in methods:
        if method.python_name in seen:
            raise CodegenError(
                file.name,
                f"{full_name}.{method.name}",
                f"its Python name {method.python_name!r} clashes with rpc "
                f"{seen[method.python_name]}",
            )
        seen[method.python_name] = method.name
    keel = service.options.Extensions[options_pb2.service]
    return Service(
        name=service.name,
        full_name=full_name,
        constant=names.constant_name(service.name),
        methods=methods,
        default_timeout=(
            _seconds(keel.default_timeout) if keel.HasField("default_timeout") else None
        ),
        auth=_auth(keel.auth, keel.HasField("auth")),
        comment=comments.get(path, ""),
        deprecated=service.options.deprecated,
    )


def check_unique_names(file: File) -> None:
    """Every module-level name the file's `*_keel.py` defines is defined once."""
    taken: dict[str, str] = {}
    generated = [(event.constant, event.full_name) for event in file.events]
    for service in file.services:
        generated += [
            (f"{service.name}Base", service.full_name),
            (f"{service.name}Client", service.full_name),
            (service.constant, service.full_name),
            *((m.constant, f"{service.full_name}.{m.name}") for m in service.methods),
        ]
        if service.publishes:
            generated.append((f"{service.name}Publisher", service.full_name))
        if service.subscribes:
            generated.append((f"{service.name}Subscriber", service.full_name))
    for name, owner in generated:
        if name in taken:
            raise CodegenError(
                file.proto, owner, f"generated name {name} clashes with {taken[name]}"
            )
        taken[name] = owner


def build(request: plugin_pb2.CodeGeneratorRequest) -> tuple[File, ...]:
    """The files to generate: one per requested .proto that declares at least one service."""
    index = _Index(request.proto_file)
    files = []
    for name in request.file_to_generate:
        proto = index.files[name]
        if not proto.service:
            continue
        index.reach(name)
        comments = _comments(proto)
        services = tuple(_service(proto, i, comments, index) for i in range(len(proto.service)))
        file = File(proto.name, names.proto_module(proto.name, "_keel"), services)
        check_unique_names(file)
        files.append(file)
    return tuple(files)
