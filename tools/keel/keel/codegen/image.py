"""Building a buf image of a workspace plus the protos Keel supplies."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import buf.validate.validate_pb2
import google.api.annotations_pb2
import google.api.field_behavior_pb2
from google.protobuf import descriptor_pb2

import keel.options.v1.options_pb2
from keel.codegen import workspace as ws
from keel.codegen.buf import BufError, run_buf
from keel.codegen.errors import BuildError

# Option extensions are decoded when the image is parsed only if their modules are loaded.
_EXTENSION_MODULES = (
    google.api.annotations_pb2,
    google.api.field_behavior_pb2,
    keel.options.v1.options_pb2,
    buf.validate.validate_pb2,
)


@dataclass(frozen=True)
class Image:
    """Every file buf compiled (imports first), and the import paths that are the user's own."""

    files: descriptor_pb2.FileDescriptorSet
    user_files: frozenset[str]
    supplied: frozenset[str]


def build(workspace: ws.Workspace) -> Image:
    """Compile the workspace with buf (source info kept, for comments)."""
    user = {name for name, _ in workspace.proto_files}
    supplied = frozenset(set(ws.supplied_files()) - user)
    with tempfile.TemporaryDirectory(prefix="keel-gen-") as tmp:
        root = Path(tmp)
        ws.assemble(workspace, root, user)
        try:
            run_buf(["build", "--output", "image.binpb"], root)
        except BufError as error:
            raise BuildError(ws.user_paths(str(error), workspace)) from error
        files = descriptor_pb2.FileDescriptorSet.FromString((root / "image.binpb").read_bytes())
    return Image(files, frozenset(user), supplied)
