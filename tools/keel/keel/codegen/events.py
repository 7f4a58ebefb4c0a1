"""Events declared in the protos: the event option of messages, what services publish and
subscribe to. Added to the model's files after `model.build`.

A message is an event when it has `option (keel.options.v1.event)`; its subject defaults to
`<package>.<snake_case name>`, its stream is its package's (`ACME_ORDERS_V1`). A service lists
events in `option (keel.options.v1.service)`: `publishes` (its own package's only) and
`subscribes`; names resolve as protobuf resolves type references, from the service's scope.
Every error names `file:line:column` and the fix.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from keel.codegen import model, names, positions
from keel.naming import snake_case
from keel.options.v1 import options_pb2

_MESSAGES = descriptor_pb2.FileDescriptorProto.MESSAGE_TYPE_FIELD_NUMBER
_SERVICES = descriptor_pb2.FileDescriptorProto.SERVICE_FIELD_NUMBER
_NESTED = descriptor_pb2.DescriptorProto.NESTED_TYPE_FIELD_NUMBER
_MESSAGE_OPTIONS = descriptor_pb2.DescriptorProto.OPTIONS_FIELD_NUMBER
_SERVICE_OPTIONS = descriptor_pb2.ServiceDescriptorProto.OPTIONS_FIELD_NUMBER
_EXTENSION = options_pb2.event.number  # (keel.options.v1.service) has the same number
_SUBJECT = options_pb2.EventOptions.SUBJECT_FIELD_NUMBER
_LISTS = {
    "publishes": options_pb2.ServiceOptions.PUBLISHES_FIELD_NUMBER,
    "subscribes": options_pb2.ServiceOptions.SUBSCRIBES_FIELD_NUMBER,
}
_TOKEN = re.compile(r"[a-z0-9_-]+")
_OPTION = "option (keel.options.v1.event) = {}"


@dataclass(frozen=True)
class Event:
    """A message published as an event; `module` is the `*_keel` module declaring its spec."""

    full_name: str
    message: model.TypeRef
    subject: str
    stream: str
    constant: str
    module: str
    proto: str
    comment: str

    @property
    def package(self) -> str:
        return self.full_name.removesuffix(f".{self.message.name}")

    @property
    def publish_method(self) -> str:
        """`OrderPlaced` → `order_placed`."""
        return names.event_method(self.message.name.rpartition(".")[2])

    @property
    def handler_method(self) -> str:
        """`OrderPlaced` → `on_order_placed`."""
        return "on_" + snake_case(self.message.name.rpartition(".")[2])


@dataclass(frozen=True)
class _Message:
    descriptor: descriptor_pb2.DescriptorProto
    file: descriptor_pb2.FileDescriptorProto
    path: tuple[int, ...]
    local: str

    @property
    def full_name(self) -> str:
        return f"{self.file.package}.{self.local}".lstrip(".")

    @property
    def is_event(self) -> bool:
        return self.descriptor.options.HasExtension(options_pb2.event)


def _messages(file: descriptor_pb2.FileDescriptorProto) -> Iterator[_Message]:
    pending: list[tuple[descriptor_pb2.DescriptorProto, tuple[int, ...], str]] = [
        (m, (_MESSAGES, i), m.name) for i, m in enumerate(file.message_type)
    ]
    while pending:
        message, path, local = pending.pop(0)
        yield _Message(message, file, path, local)
        pending += [
            (nested, (*path, _NESTED, i), f"{local}.{nested.name}")
            for i, nested in enumerate(message.nested_type)
        ]


def _subject_problem(subject: str, package: str) -> str:
    if not subject.startswith(f"{package}."):
        return f'subject "{subject}" is outside the package {package}: start it with "{package}."'
    for token in subject.split("."):
        if not _TOKEN.fullmatch(token):
            return (
                f'subject "{subject}": token "{token}" is not allowed: use dot-separated tokens '
                "of a-z, 0-9, _ and - (no wildcards * or >, no empty token)"
            )
    return ""


class _Index(model.ReachableFiles):
    """Messages by full name, indexed package by package as names are looked up."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        super().__init__(files)
        self.messages: dict[str, _Message] = {}
        self.packages: dict[str, list[str]] = {}
        for file in self.files.values():
            self.packages.setdefault(file.package, []).append(file.name)
        self.scopes = {
            ".".join(parts[:n])
            for package in self.packages
            for parts in [package.split(".")]
            for n in range(1, len(parts) + 1)
        }
        self._positions: dict[str, positions.Positions] = {}
        self._comments: dict[str, Mapping[tuple[int, ...], str]] = {}
        self._events: dict[str, Event] = {}
        self._checked: set[str] = set()

    def _index(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self.messages.update((m.full_name, m) for m in _messages(file))

    def find(self, full_name: str) -> _Message | None:
        """The message `full_name`, indexing the files of every package it could be in."""
        parts = full_name.split(".")
        for n in range(len(parts)):
            for name in self.packages.get(".".join(parts[:n]), ()):
                self.reach(name)
        return self.messages.get(full_name)

    def resolve(self, name: str, scope: str) -> _Message | None:
        """The message `name` refers to from `scope`, as protoc resolves type names: the
        innermost scope holding the name's first part decides."""
        if name.startswith("."):
            return self.find(name[1:])
        first = name.split(".", maxsplit=1)[0]
        parts = scope.split(".") if scope else []
        for n in range(len(parts), -1, -1):
            prefix = ".".join(parts[:n])
            head = f"{prefix}.{first}" if prefix else first
            if self.find(head) is None and head not in self.scopes:
                continue
            if first == name and head in self.scopes and head not in self.messages:
                continue  # a package, not a type
            return self.find(f"{prefix}.{name}" if prefix else name)
        return None

    def error(
        self,
        where: _Message | descriptor_pb2.FileDescriptorProto,
        path: tuple[int, ...],
        symbol: str,
        reason: str,
        elements: int = 0,
    ) -> model.CodegenError:
        """An error at `path` within `where` (a message, or a file), naming file:line:column."""
        file = where.file if isinstance(where, _Message) else where
        if isinstance(where, _Message):
            path = (*where.path, *path)
        return model.CodegenError(file.name, symbol, reason, self._at(file).of(path, elements))

    def where(self, message: _Message) -> str:
        """`file:line:column` of a message."""
        found = self._at(message.file).of(message.path)
        return f"{message.file.name}:{found[0]}:{found[1]}" if found else message.file.name

    def _at(self, file: descriptor_pb2.FileDescriptorProto) -> positions.Positions:
        found = self._positions.get(file.name)
        if found is None:
            found = self._positions[file.name] = positions.Positions(file)
        return found

    def _comment(self, message: _Message) -> str:
        found = self._comments.get(message.file.name)
        if found is None:
            found = self._comments[message.file.name] = model.file_comments(message.file)
        return found.get(message.path, "")

    def event(self, message: _Message) -> Event:
        """The event a message declares, checked; raises CodegenError at the option."""
        found = self._events.get(message.full_name)
        if found is not None:
            return found
        file = message.file
        option = message.descriptor.options.Extensions[options_pb2.event]
        subject_path = (_MESSAGE_OPTIONS, _EXTENSION, _SUBJECT)
        if not file.package:
            raise self.error(
                message,
                subject_path,
                message.full_name,
                "an event needs a package: add one to the file",
            )
        default = ".".join(snake_case(part) for part in message.local.split("."))
        subject = option.subject or f"{file.package}.{default}"
        problem = _subject_problem(subject, file.package)
        if problem:
            raise self.error(message, subject_path, message.full_name, problem)
        event = self._events[message.full_name] = Event(
            full_name=message.full_name,
            message=model.TypeRef(message.full_name, names.proto_module(file.name), message.local),
            subject=subject,
            stream=file.package.upper().replace(".", "_"),
            constant=names.constant_name(*message.local.split(".")),
            module=names.proto_module(file.name, "_keel"),
            proto=file.name,
            comment=self._comment(message),
        )
        self._check_package(file.package)
        return event

    def _check_package(self, package: str) -> None:
        """No two events of `package` (one stream) share a subject."""
        if package in self._checked:
            return
        self._checked.add(package)
        subjects: dict[str, _Message] = {}
        for name in sorted(self.packages[package]):
            self.reach(name)
            for message in _messages(self.files[name]):
                if not message.is_event:
                    continue
                subject = self.event(message).subject
                first = subjects.setdefault(subject, message)
                if first is not message:
                    raise self.error(
                        message,
                        (_MESSAGE_OPTIONS, _EXTENSION, _SUBJECT),
                        message.full_name,
                        f'subject "{subject}" is also the subject of {first.full_name} '
                        f"({self.where(first)}): give one of them another subject",
                    )


def _listed(
    index: _Index, file: descriptor_pb2.FileDescriptorProto, position: int, kind: str
) -> tuple[Event, ...]:
    """The events service `position` of `file` lists in `kind` (publishes or subscribes)."""
    service = file.service[position]
    symbol = f"{file.package}.{service.name}".lstrip(".")
    listed = list(getattr(service.options.Extensions[options_pb2.service], kind))
    path = (_SERVICES, position, _SERVICE_OPTIONS, _EXTENSION, _LISTS[kind])
    events: dict[str, Event] = {}
    methods: dict[str, str] = {}
    for i, name in enumerate(listed):

        def error(reason: str, i: int = i) -> model.CodegenError:
            return index.error(file, (*path, i), symbol, reason, len(listed))

        message = index.resolve(name, symbol)
        if message is None:
            raise error(
                f'{kind} "{name}": no message of that name in scope {symbol}: name a message '
                f"declared with {_OPTION} (another package's by its full name; with "
                "keel gen --path, select the file that declares it too)"
            )
        if not message.is_event:
            raise error(
                f'{kind} "{name}": {message.full_name} ({index.where(message)}) is not an '
                f"event: add `{_OPTION};` to it"
            )
        event = index.event(message)
        if kind == "publishes" and event.package != file.package:
            raise error(
                f'publishes "{name}": {event.full_name} is an event of package {event.package}; '
                f"a service publishes only events of its own package ({file.package}): "
                "declare the event there, or subscribe to it"
            )
        if event.full_name in events:
            raise error(f'{kind} "{name}": {event.full_name} is listed twice')
        method = event.publish_method if kind == "publishes" else event.handler_method
        if method in methods:
            raise error(
                f'{kind} "{name}": its method {method}() clashes with that of {methods[method]}'
            )
        events[event.full_name] = event
        methods[method] = event.full_name
    return tuple(events.values())


def _declared(index: _Index, file: descriptor_pb2.FileDescriptorProto) -> tuple[Event, ...]:
    return tuple(index.event(message) for message in _messages(file) if message.is_event)


def build(
    request: plugin_pb2.CodeGeneratorRequest, files: tuple[model.File, ...]
) -> tuple[model.File, ...]:
    """`files` (from `model.build`) with their events, publishers and subscribers, plus a
    file for each requested .proto that declares events but no service."""
    index = _Index(request.proto_file)
    by_proto = {file.proto: file for file in files}
    result = []
    for name in request.file_to_generate:
        proto = index.files[name]
        declared = _declared(index, proto)
        file = by_proto.get(name)
        if file is None:
            if not declared:
                continue
            file = model.File(name, names.proto_module(name, "_keel"), ())
        services = tuple(
            dataclasses.replace(
                service,
                publishes=_listed(index, proto, i, "publishes"),
                subscribes=_listed(index, proto, i, "subscribes"),
            )
            for i, service in enumerate(file.services)
        )
        file = dataclasses.replace(file, services=services, events=declared)
        model.check_unique_names(file)
        result.append(file)
    return tuple(result)
