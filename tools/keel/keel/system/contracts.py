"""The contracts of a workspace: its proto files, what each imports, and each service's rpcs and
events, read from one buf image (as `keel gen` reads them)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from keel.codegen import events, model
from keel.toolchain import image
from keel.toolchain import workspace as ws


@dataclass(frozen=True)
class Rpc:
    name: str
    python_name: str
    """The generated client's method for it (`ReserveStock` → `reserve_stock`)."""
    request: str = ""
    """Full names of its request and response messages."""
    response: str = ""


@dataclass(frozen=True)
class Service:
    full_name: str
    proto: str
    """The import path of the file declaring it (`acme/orders/v1/orders.proto`)."""
    rpcs: tuple[Rpc, ...]
    publishes: tuple[str, ...]
    """Full names of the event messages it publishes."""
    subscribes: tuple[str, ...]

    @property
    def client_class(self) -> str:
        """The generated client's class name (`OrderServiceClient`)."""
        return f"{self.full_name.rpartition('.')[2]}Client"


@dataclass(frozen=True)
class Contracts:
    services: dict[str, Service]
    """By full name."""
    imports: dict[str, tuple[str, ...]]
    """The workspace's own proto files (import path) → the files each imports."""
    files: dict[str, Path]
    """The workspace's own proto files (import path) → where they are, relative to the root."""
    events: dict[str, str]
    """Full name of each event message → the proto file declaring it."""
    messages: dict[str, dict[str, str]]
    """Full name of every message compiled (imports too) → its fields: name → the full name of
    the field's message type ("" for scalars and enums)."""

    def reachable(self, roots: Iterable[str]) -> set[str]:
        """The messages `roots` are made of: themselves and their message fields', deeply."""
        found: set[str] = set()
        todo = [r for r in roots if r in self.messages]
        while todo:
            name = todo.pop()
            if name in found:
                continue
            found.add(name)
            todo.extend(t for t in self.messages[name].values() if t in self.messages)
        return found

    def importers(self, proto: str) -> set[str]:
        """The workspace's files that import `proto`, directly or not, and `proto` itself."""
        found, todo = {proto}, [proto]
        while todo:
            current = todo.pop()
            for name, imported in self.imports.items():
                if current in imported and name not in found:
                    found.add(name)
                    todo.append(name)
        return found


def load(root: Path) -> Contracts:
    """The contracts of the buf workspace at `root` (compiled with buf)."""
    workspace = ws.load(root)
    built = image.build(workspace)
    supplied = (
        ws.supplied_files()
    )  # google/api, buf/validate, keel/options: Keel's, not the system's
    located = {name: path for name, path in workspace.proto_files if name not in supplied}
    own = [f for f in built.files.file if f.name in located]
    request = plugin_pb2.CodeGeneratorRequest(
        file_to_generate=[f.name for f in own], proto_file=built.files.file
    )
    files = events.build(request, model.build(request))
    services = {
        service.full_name: Service(
            full_name=service.full_name,
            proto=file.proto,
            rpcs=tuple(
                Rpc(m.name, m.python_name, m.input.full_name, m.output.full_name)
                for m in service.methods
            ),
            publishes=tuple(e.full_name for e in service.publishes),
            subscribes=tuple(e.full_name for e in service.subscribes),
        )
        for file in files
        for service in file.services
    }
    return Contracts(
        services=services,
        imports={f.name: tuple(f.dependency) for f in own},
        files={name: path.relative_to(workspace.root) for name, path in located.items()},
        events={event.full_name: file.proto for file in files for event in file.events},
        messages=message_fields(built.files.file),
    )


def walk_messages(
    prefix: str, messages: Iterable[descriptor_pb2.DescriptorProto]
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    """(full name, message) of `messages` and of all their nested messages."""
    for message in messages:
        name = f"{prefix}.{message.name}" if prefix else message.name
        yield name, message
        yield from walk_messages(name, message.nested_type)


def message_fields(
    files: Iterable[descriptor_pb2.FileDescriptorProto],
) -> dict[str, dict[str, str]]:
    """Every message of `files` by full name → field name → its message type ("" if none)."""
    message_type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    return {
        name: {
            field.name: field.type_name.lstrip(".") if field.type == message_type else ""
            for field in message.field
        }
        for file in files
        for name, message in walk_messages(file.package, file.message_type)
    }
