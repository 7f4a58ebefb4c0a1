"""`keel new service NAME --proto FILE`: a service package for a proto the team wrote first.

Contract first: the proto exists (lint-clean, possibly declaring several services); this reads it
with buf and writes `services/<name>/` serving every service it declares, from one process on one
port: one thin class per service whose methods keep the generated signatures and answer
UNIMPLEMENTED until written, settings, tables with a first migration (the outbox and
idempotency tables Keel's services use), tests that every service and method is served, a
Dockerfile and a README; it registers every service at the same address.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

from keel.codegen.names import method_name, proto_module
from keel.system.contracts import walk_messages
from keel.toolchain import image
from keel.toolchain import workspace as ws
from keel.toolchain.errors import BuildError

RESERVED_NAMES = frozenset(
    {"grpc", "keel", "pytest", "health_pb2", "health_pb2_grpc", "Any", "Callable", "Sequence"}
    | {"AsyncIterator", "Database", "SERVICES"}
)
"""Names the generated modules use: a message module is imported under another."""


class ContractError(Exception):
    """The proto cannot be served as asked; the message says why."""


@dataclass(frozen=True)
class Rpc:
    """One method of a proto service, as Python sees it."""

    name: str
    python: str
    request: str  # module alias . message
    response: str
    client_streaming: bool
    server_streaming: bool
    comment: str


@dataclass(frozen=True)
class Service:
    """One proto service of the file: full name, Python names, methods."""

    full_name: str
    name: str
    module: str  # the generated `_keel` module, dotted
    rpcs: tuple[Rpc, ...]


@dataclass(frozen=True)
class Contract:
    """What a proto file declares that a service package serves."""

    file: str  # import path
    package: str
    services: tuple[Service, ...]
    imports: tuple[tuple[str, str], ...]  # (module, alias) of the message modules used


def _import_path(root: Path, proto: Path, workspace: ws.Workspace) -> str:
    absolute = (root / proto).resolve()
    for module in workspace.modules:
        base = (root / module.path).resolve()
        if absolute.is_relative_to(base):
            return absolute.relative_to(base).as_posix()
    raise ContractError(f"{proto} is not in a module of buf.yaml's workspace")


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(location.path): location.leading_comments.strip()
        for location in file.source_code_info.location
        if location.leading_comments
    }


def read(root: Path, proto: Path) -> Contract:
    """The services `proto` (a path under the workspace at `root`) declares; ContractError
    when it does not compile or declares none."""
    if not (root / proto).is_file():
        raise ContractError(f"--proto {proto}: no such file")
    workspace = ws.load(root)
    path = _import_path(root, proto, workspace)
    try:
        built = image.build_paths(workspace, [path])
    except BuildError as error:
        raise ContractError(f"{proto} does not compile:\n{error}") from None
    files = {f.name: f for f in built.files.file} if built is not None else {}
    if path not in files:
        raise ContractError(f"{proto} is not in a module of buf.yaml's workspace")
    file = files[path]
    types = {  # full name of every message, nested ones too → (its file, its Python path)
        f".{name}": (f.name, name.removeprefix(f"{f.package}.") if f.package else name)
        for f in files.values()
        for name, _ in walk_messages(f.package, f.message_type)
    }
    comments = _comments(file)
    used = sorted(
        {
            proto_module(types[t][0])
            for service in file.service
            for m in service.method
            for t in (m.input_type, m.output_type)
        }
    )
    last = [module.rsplit(".", 1)[1] for module in used]
    taken = RESERVED_NAMES | {proto_module(path, "_keel").rsplit(".", 1)[1]}
    aliases = {
        module: name if last.count(name) == 1 and name not in taken else module.replace(".", "_")
        for module, name in zip(used, last, strict=True)
    }

    def python_type(type_name: str) -> str:
        proto_file, path = types[type_name]
        return f"{aliases[proto_module(proto_file)]}.{path}"

    services = []
    for s_index, service in enumerate(file.service):
        rpcs = tuple(
            Rpc(
                name=method.name,
                python=method_name(method.name),
                request=python_type(method.input_type),
                response=python_type(method.output_type),
                client_streaming=method.client_streaming,
                server_streaming=method.server_streaming,
                comment=comments.get((6, s_index, 2, m_index), ""),
            )
            for m_index, method in enumerate(service.method)
        )
        full = f"{file.package}.{service.name}" if file.package else service.name
        keel_module = proto_module(path, "_keel")
        services.append(Service(full, service.name, keel_module, rpcs))
    if not services:
        raise ContractError(f"{proto} declares no service: nothing to serve")
    return Contract(path, file.package, tuple(services), tuple(sorted(aliases.items())))
