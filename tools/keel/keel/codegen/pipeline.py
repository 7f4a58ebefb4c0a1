"""`keel gen`: one buf build, then every Python generator in this process, then a careful write.

Generators: protoc's python (`*_pb2.py`) and grpcio's (`*_pb2_grpc.py`) from grpcio-tools' bundled
protoc, mypy-protobuf (`*_pb2.pyi`, `*_pb2_grpc.pyi`), and Keel's plugin (`*_keel.py`). Nothing is
written until all of them succeeded; a rerun on unchanged inputs only hashes them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from keel.toolchain import outputs
from keel.toolchain import workspace as ws
from keel.toolchain.errors import GenerateError

if TYPE_CHECKING:
    from google.protobuf import descriptor_pb2
    from google.protobuf.compiler import plugin_pb2


_CODEGEN = Path(__file__).resolve().parent
_TOOLS = ("buf-bin", "grpcio-tools", "mypy-protobuf", "orjson", "protobuf")
# The modules whose code shapes the output (a change to them invalidates earlier outputs).
_GENERATOR_SOURCES = (
    "../httprule.py",
    "../naming.py",
    "../toolchain/errors.py",
    "../toolchain/image.py",
    "../toolchain/workspace.py",
    "asyncapi.py",
    "events.py",
    "grpc_python.py",
    "model.py",
    "names.py",
    "openapi.py",
    "pipeline.py",
    "plugin.py",
    "positions.py",
    "render.py",
    "render_events.py",
    "text.py",
)


@dataclass(frozen=True)
class Result:
    up_to_date: bool
    report: outputs.WriteReport | None
    seconds: float

    def summary(self) -> str:
        if self.report is None:
            return f"keel gen: up to date ({self.seconds:.2f} s)"
        r = self.report
        return (
            f"keel gen: {len(r.written)} written, {len(r.removed)} removed, "
            f"{r.unchanged} unchanged ({self.seconds:.2f} s)"
        )


def _selected(name: str, paths: Sequence[str], supplied: set[str]) -> bool:
    if paths:
        return any(name == p or name.startswith(p.rstrip("/") + "/") for p in paths)
    return name not in supplied and not name.startswith("google/protobuf/")


def _version(distribution: str) -> str:
    """An installed distribution's version, read from its .dist-info folder name.

    Much cheaper than importlib.metadata, which a no-op `keel gen` cannot afford.
    """
    spec = importlib.util.find_spec("grpc_tools")
    folders = [Path(p) for p in sys.path if p.endswith("site-packages")]
    if spec is not None and spec.origin is not None:
        folders.insert(0, Path(spec.origin).parent.parent)
    stem = distribution.replace("-", "_")
    for folder in folders:
        for found in sorted(folder.glob(f"{stem}-*.dist-info")):
            return found.name.removeprefix(f"{stem}-").removesuffix(".dist-info")
    from importlib import metadata  # noqa: PLC0415

    return metadata.version(distribution)


def fingerprint(workspace: ws.Workspace, paths: Sequence[str]) -> str:
    """A hash of everything the output depends on: inputs, options, Keel and tool versions."""
    h = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        h.update(f"{label}\0{len(data)}\0".encode())
        h.update(data)

    add("paths", json.dumps(list(paths)).encode())
    add("buf.yaml", workspace.config.read_bytes())
    for tool in _TOOLS:
        add(tool, _version(tool).encode())
    for source in _GENERATOR_SOURCES:
        add(f"keel:{source}", (_CODEGEN / source).read_bytes())
    for name, file in ws.supplied_files().items():
        add(f"supplied:{name}", file.read_bytes())
    for name, file in workspace.proto_files:
        add(f"proto:{name}", file.read_bytes())
    return h.hexdigest()


def _mypy_stubs(request: plugin_pb2.CodeGeneratorRequest) -> dict[str, bytes]:
    from google.protobuf.compiler import plugin_pb2  # noqa: PLC0415
    from mypy_protobuf import main as mypy_protobuf  # noqa: PLC0415

    response = plugin_pb2.CodeGeneratorResponse()
    descriptors = mypy_protobuf.Descriptors(request)
    flags = (True, False, False, False, False)  # quiet; defaults otherwise
    mypy_protobuf.generate_mypy_stubs(descriptors, response, *flags)
    mypy_protobuf.generate_mypy_grpc_stubs(
        descriptors, response, *flags, mypy_protobuf.GRPCType.from_parameter("")
    )
    return {file.name: file.content.encode() for file in response.file}


def _keel(request: plugin_pb2.CodeGeneratorRequest) -> dict[str, bytes]:
    from keel.codegen import plugin  # noqa: PLC0415

    response = plugin.generate(request)
    if response.error:
        raise GenerateError(response.error)
    return {file.name: file.content.encode() for file in response.file}


def _for_protoc(
    files: descriptor_pb2.FileDescriptorSet, targets: Sequence[str]
) -> descriptor_pb2.FileDescriptorSet:
    """The image with only the comments protoc's generators read: grpc_python's, of the services
    and rpcs of the files generated (protoc's python generator reads none). googleapis-style
    files are mostly comments; protoc then parses a third of the bytes, in two thirds the time."""
    from google.protobuf import descriptor_pb2  # noqa: PLC0415

    wanted = set(targets)
    service = descriptor_pb2.FileDescriptorProto.SERVICE_FIELD_NUMBER
    slim = descriptor_pb2.FileDescriptorSet()
    slim.CopyFrom(files)
    for file in slim.file:
        if not file.service or file.name not in wanted:
            file.ClearField("source_code_info")
            continue
        kept = [loc for loc in file.source_code_info.location if loc.path[:1] == [service]]
        del file.source_code_info.location[:]
        file.source_code_info.location.extend(kept)
    return slim


def generate_files(workspace: ws.Workspace, paths: Sequence[str] = ()) -> dict[str, bytes]:
    """Output path → content for a workspace; raises before anything is written.

    protoc (python + grpc_python) runs in a child process while this one runs mypy-protobuf
    and Keel's plugin, so both cores work, as `buf generate` would run plugins side by side.
    """
    from google.protobuf.compiler import plugin_pb2  # noqa: PLC0415

    from keel.codegen import grpc_python  # noqa: PLC0415
    from keel.toolchain import image  # noqa: PLC0415 (imports protobuf: not for a no-op run)

    built = image.build_paths(workspace, paths) if paths else image.build(workspace)
    if built is None:
        return {}
    supplied = set(ws.supplied_files())
    targets = [
        f.name
        for f in built.files.file
        if f.name in built.user_files and _selected(f.name, paths, supplied)
    ]
    if not targets:
        return {}
    request = plugin_pb2.CodeGeneratorRequest(file_to_generate=targets, proto_file=built.files.file)
    with grpc_python.ProtocRun(
        _for_protoc(built.files, targets), targets, ["--python_out", "--grpc_python_out"]
    ) as protoc:
        files = _keel(request)
        files.update(_mypy_stubs(request))
        files.update(protoc.result())
    return dict(sorted(files.items()))


def run(workspace_dir: Path, out: Path, paths: Sequence[str] = (), force: bool = False) -> Result:
    """Regenerate `out` from the workspace at `workspace_dir`; skip work if nothing changed."""
    started = time.perf_counter()
    workspace = ws.load(workspace_dir)
    manifest = outputs.Manifest.read(out)
    if manifest.fingerprint and not force:
        print_ = fingerprint(workspace, paths)
        if manifest.fingerprint == print_ and manifest.intact(out):
            return Result(True, None, time.perf_counter() - started)
        files = generate_files(workspace, paths)
    else:  # generating whatever the inputs: hash them in a thread while buf compiles them
        if not paths:  # image.build walks the workspace too: walk once, before two threads
            workspace.proto_files  # noqa: B018
        hashed: list[str | BaseException] = []

        def hash_inputs() -> None:
            try:
                hashed.append(fingerprint(workspace, paths))
            except BaseException as error:  # raised again below, in this thread
                hashed.append(error)

        thread = threading.Thread(target=hash_inputs)
        thread.start()
        try:
            files = generate_files(workspace, paths)
        finally:
            thread.join()
        if isinstance(hashed[0], BaseException):
            raise hashed[0]
        print_ = hashed[0]
    out.mkdir(parents=True, exist_ok=True)
    report = outputs.sync(out, files, print_)
    return Result(False, report, time.perf_counter() - started)
