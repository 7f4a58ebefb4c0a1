"""Writing generated files: only what changed, atomically, removing what is no longer generated.

The output folder keeps a manifest (`.keel-gen.json`) of the files Keel wrote and of the inputs
they came from, so a rerun on unchanged inputs is a no-op and stale files can be removed without
touching anything Keel did not write.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = ".keel-gen.json"


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What one `keel gen` run wrote into an output folder."""

    fingerprint: str = ""
    files: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, out: Path) -> Manifest:
        try:
            data = json.loads((out / MANIFEST).read_text())
            return cls(str(data["fingerprint"]), dict(data["files"]))
        except (OSError, ValueError, KeyError, TypeError):
            return cls()

    def render(self) -> str:
        data = {"fingerprint": self.fingerprint, "files": dict(sorted(self.files.items()))}
        return json.dumps(data, indent=2) + "\n"

    def intact(self, out: Path) -> bool:
        """Whether every listed file is on disk with the content it was written with."""
        for name, expected in self.files.items():
            try:
                if digest((out / name).read_bytes()) != expected:
                    return False
            except OSError:
                return False
        return True


@dataclass(frozen=True)
class WriteReport:
    written: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: int


def _write_atomically(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.keel-tmp")
    staging.write_bytes(content)
    os.replace(staging, path)


def _prune_empty_dirs(out: Path, start: Path) -> None:
    directory = start
    while directory != out and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent


def sync(out: Path, files: Mapping[str, bytes], fingerprint: str) -> WriteReport:
    """Make `out` hold exactly `files` among the files Keel manages there; manifest last."""
    previous = Manifest.read(out)
    written, removed, unchanged = [], [], 0
    for name in sorted(files):
        path = out / name
        content = files[name]
        try:
            same = path.read_bytes() == content
        except OSError:
            same = False
        if same:
            unchanged += 1
        else:
            _write_atomically(path, content)
            written.append(name)
    for name in sorted(set(previous.files) - set(files)):
        path = out / name
        if path.is_file():
            path.unlink()
            removed.append(name)
            _prune_empty_dirs(out, path.parent)
    manifest = Manifest(fingerprint, {name: digest(content) for name, content in files.items()})
    _write_atomically(out / MANIFEST, manifest.render().encode())
    return WriteReport(tuple(written), tuple(removed), unchanged)
