"""A user's buf v2 workspace, and the temporary workspace `keel gen` builds from it.

buf v2 modules cannot overlap and must live inside their workspace, so Keel never edits the
user's files: it makes a temporary workspace whose modules are symlinks to the user's modules,
plus one module of the protos Keel supplies (google/api, google/rpc, buf/validate,
keel/options) for every path the user's modules do not already provide.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

from keel.toolchain.buf import BufError, run_buf

KEEL_PROTOS = Path(__file__).resolve().parent.parent / "protos"
"""The protos Keel ships, a buf module of their own."""

_LINK = "ws"
_SUPPLIED = "keel_supplied"


class WorkspaceError(Exception):
    """The folder is not a buf v2 workspace Keel can use."""


@dataclass(frozen=True)
class Module:
    """One module of the user's workspace: its path and filters, relative to the workspace."""

    path: str
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    def selects(self, relpath: str) -> bool:
        """Whether a workspace-relative file path belongs to this module's sources."""

        def under(prefixes: Sequence[str]) -> bool:
            return any(relpath == p or relpath.startswith(p.rstrip("/") + "/") for p in prefixes)

        return (not self.includes or under(self.includes)) and not under(self.excludes)


@dataclass(frozen=True)
class Workspace:
    """A buf v2 workspace on disk."""

    root: Path
    modules: tuple[Module, ...]

    @property
    def config(self) -> Path:
        return self.root / "buf.yaml"

    @cached_property
    def proto_files(self) -> tuple[tuple[str, Path], ...]:
        """(import path, file) for every .proto of every module, sorted by import path.

        Walked once per Workspace: `keel gen` needs it for the fingerprint and for the build.
        """
        found: dict[str, Path] = {}
        for module in self.modules:
            base = self.root / module.path
            # os.walk and string prefixes: Path.rglob and relative_to cost several times more.
            skip_root, skip_base = len(str(self.root)) + 1, len(str(base)) + 1
            for folder, _, names in os.walk(base):
                for name in names:
                    if name.endswith(".proto"):
                        file = os.path.join(folder, name)
                        if module.selects(file[skip_root:].replace(os.sep, "/")):
                            found[file[skip_base:].replace(os.sep, "/")] = Path(file)
        return tuple(sorted(found.items()))


@cache
def supplied_files() -> dict[str, Path]:
    """Import path → file for every proto Keel supplies."""
    return {p.relative_to(KEEL_PROTOS).as_posix(): p for p in sorted(KEEL_PROTOS.rglob("*.proto"))}


def load(root: Path) -> Workspace:
    """Read a workspace's modules (through `buf config ls-modules`, so buf's rules apply)."""
    root = root.resolve()
    config = root / "buf.yaml"
    if not config.is_file():
        raise WorkspaceError(f"{root}: no buf.yaml (keel gen needs a buf v2 workspace)")
    text = config.read_text()
    if not any(
        line.strip() in ("version: v2", "version: 'v2'", 'version: "v2"')
        for line in text.splitlines()
    ):
        raise WorkspaceError(
            f"{config}: keel gen needs a buf v2 workspace (`version: v2`); "
            "`buf config migrate` converts a v1 one"
        )
    try:
        listing = run_buf(["config", "ls-modules", "--format", "json"], root)
    except BufError as error:
        raise WorkspaceError(f"{config}: {error}") from error
    modules = []
    for line in listing.splitlines():
        entry = json.loads(line)
        modules.append(
            Module(
                path=entry.get("path", "."),
                includes=tuple(entry.get("includes", ())),
                excludes=tuple(entry.get("excludes", ())),
            )
        )
    return Workspace(root, tuple(modules))


def linked(relpath: str) -> str:
    """Where a module at `relpath` of the user's workspace sits in the assembled one."""
    return _LINK if relpath in ("", ".") else f"{_LINK}/{relpath}"


def assemble(workspace: Workspace, into: Path, provided: set[str]) -> None:
    """Write, in the empty folder `into`, a buf workspace of the user's modules plus Keel's.

    `provided` holds the import paths the user's modules already have; Keel's copies of those
    are left out, so the user's win and buf sees no duplicate.
    """
    (into / _LINK).symlink_to(workspace.root, target_is_directory=True)
    supplied = into / _SUPPLIED
    for name, file in supplied_files().items():
        if name not in provided:
            target = supplied / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(file)
    lines = ["version: v2", "modules:"]
    for module in workspace.modules:
        lines.append(f"  - path: {json.dumps(linked(module.path))}")
        if module.includes:
            lines.append(f"    includes: {json.dumps([linked(p) for p in module.includes])}")
        if module.excludes:
            lines.append(f"    excludes: {json.dumps([linked(p) for p in module.excludes])}")
    if supplied.exists():
        lines.append(f"  - path: {_SUPPLIED}")
    (into / "buf.yaml").write_text("\n".join(lines) + "\n")


def user_paths(message: str, workspace: Workspace) -> str:
    """buf's messages about the temporary workspace, with paths as the user knows them."""
    shown = os.path.relpath(workspace.root)
    prefix = "" if shown == "." else f"{shown}/"
    message = re.sub(rf"(?<![\w/.-]){_LINK}/", lambda _: prefix, message)
    return re.sub(rf"(?<![\w/.-]){_SUPPLIED}/", f"{KEEL_PROTOS}/", message)


def provides(
    workspace: Workspace, name: str, modules: Sequence[Module] = (), *, folder: bool = False
) -> bool:
    """Whether the user's modules (or these `modules`) have the import path `name` (with
    `folder`: a .proto file at or under it). Looked up on disk, so that a build limited to some
    paths does not wait for a walk of the whole workspace."""
    for module in modules or workspace.modules:
        target = workspace.root / module.path / name
        found: Iterable[Path] = []
        if target.is_file():
            found = [target] if target.suffix == ".proto" else []
        elif folder and target.is_dir():
            found = target.rglob("*.proto")
        if any(module.selects(file.relative_to(workspace.root).as_posix()) for file in found):
            return True
    return False
