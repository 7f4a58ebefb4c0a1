"""`protoc-gen-grpc_python`: grpcio-tools' `_pb2_grpc.py` generator as a protoc/buf plugin.

buf has no builtin grpc_python plugin; this runs grpcio-tools' bundled protoc over the request's
descriptors in a temporary directory and returns what it wrote. `keel gen` does not need it (it
runs the generators in one process); it is here for users' own `buf.gen.yaml` files.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def run_protoc(
    files: descriptor_pb2.FileDescriptorSet, targets: list[str], flags: list[str]
) -> dict[str, bytes]:
    """Run grpcio-tools' protoc in-process over `files`; `flags` hold `--x_out` (without dir)."""
    with tempfile.TemporaryDirectory(prefix="keel-protoc-") as tmp:
        root = Path(tmp)
        image = root / "image.binpb"
        image.write_bytes(files.SerializeToString())
        out = root / "out"
        out.mkdir()
        args = ["protoc", f"--descriptor_set_in={image}", *(f"{f}={out}" for f in flags)]
        status = protoc.main([*args, *targets])
        if status != 0:
            raise RuntimeError(f"grpcio-tools protoc failed with status {status}")
        return {
            path.relative_to(out).as_posix(): path.read_bytes()
            for path in sorted(out.rglob("*"))
            if path.is_file()
        }


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
