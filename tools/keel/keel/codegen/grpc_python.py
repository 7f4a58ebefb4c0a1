"""`protoc-gen-grpc_python`: grpcio-tools' `_pb2_grpc.py` generator as a protoc/buf plugin.

buf has no builtin grpc_python plugin; this runs grpcio-tools' bundled protoc over the request's
descriptors in a temporary directory and returns what it wrote. `keel gen` uses `ProtocRun`
directly (one protoc for every file, beside its other generators); `main` is for users' own
`buf.gen.yaml` files.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2


def docstring_safe(files: descriptor_pb2.FileDescriptorSet) -> descriptor_pb2.FileDescriptorSet:
    """A copy whose comments can sit inside a \"\"\" docstring.

    grpcio-tools' generator pastes rpc comments into `_pb2_grpc.py` docstrings unescaped, so a
    comment with triple quotes or a backslash would make invalid (or warning) Python.
    """
    safe = descriptor_pb2.FileDescriptorSet()
    safe.CopyFrom(files)
    for file in safe.file:
        for location in file.source_code_info.location:
            for field in ("leading_comments", "trailing_comments"):
                text = getattr(location, field)
                if "\\" in text or '"' in text:
                    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
                    setattr(location, field, escaped)
    return safe


class ProtocRun:
    """grpcio-tools' protoc over a descriptor set, in a child process started on entry.

    `result()` waits for it and returns output path → content; a failure raises RuntimeError
    with protoc's message.
    """

    def __init__(
        self, files: descriptor_pb2.FileDescriptorSet, targets: list[str], flags: list[str]
    ) -> None:
        self._files = files
        self._targets = targets
        self._flags = flags

    def __enter__(self) -> ProtocRun:
        self._tmp = tempfile.TemporaryDirectory(prefix="keel-protoc-")
        root = Path(self._tmp.name)
        image = root / "image.binpb"
        image.write_bytes(docstring_safe(self._files).SerializeToString())
        self._out = root / "out"
        self._out.mkdir()
        args = [f"--descriptor_set_in={image}", *(f"{f}={self._out}" for f in self._flags)]
        (root / "args.txt").write_text("\n".join([*args, *self._targets]) + "\n")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "grpc_tools.protoc", f"@{root / 'args.txt'}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return self

    def result(self) -> dict[str, bytes]:
        _, stderr = self._process.communicate()
        if self._process.returncode != 0:
            raise RuntimeError(f"grpcio-tools protoc failed: {stderr.decode().strip()}")
        return {
            path.relative_to(self._out).as_posix(): path.read_bytes()
            for path in sorted(self._out.rglob("*"))
            if path.is_file()
        }

    def __exit__(self, *exc_info: object) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._tmp.cleanup()


def run_protoc(
    files: descriptor_pb2.FileDescriptorSet, targets: list[str], flags: list[str]
) -> dict[str, bytes]:
    """Run grpcio-tools' protoc over `files`; `flags` are `--x_out` options without a folder."""
    with ProtocRun(files, targets, flags) as run:
        return run.result()


def main() -> None:
    """Run as a protoc plugin."""
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    files = descriptor_pb2.FileDescriptorSet(file=request.proto_file)
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    try:
        outputs = run_protoc(files, list(request.file_to_generate), ["--grpc_python_out"])
    except RuntimeError as error:
        response.error = str(error)
    else:
        for name, content in outputs.items():
            response.file.add(name=name, content=content.decode())
    sys.stdout.buffer.write(response.SerializeToString())
