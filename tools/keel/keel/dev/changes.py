"""Which saved files `keel dev --watch` acts on, and which services they touch.

Editor temp files, caches, generated code (`keel gen` writes it: watching it would restart in a
loop), databases and state folders are ignored; so are a service's tests and docs (the running
service does not load them). Which services a change touches is `keel affected`'s answer
(keel.system.affected): a service's own code touches it, a proto touches the services that serve
it, call it or subscribe to its events, and Keel itself touches every service."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, DefaultFilter

from keel.system import affected
from keel.system.contracts import Contracts
from keel.system.packages import Package


class SavedFiles(DefaultFilter):
    """watchfiles' default filter (VCS folders, `__pycache__`, `.venv`, swap and backup files)
    and more editor temp files, generated modules, databases and the given folders."""

    ignore_dirs = (*DefaultFilter.ignore_dirs, ".keel", ".ruff_cache", "node_modules", "_work")
    ignore_entity_patterns = (
        *DefaultFilter.ignore_entity_patterns,
        r"^4913$",  # vim's probe file
        r"\.tmp$",
        r"\.kate-swp$",
        r"^\.goutputstream-",
        r"\.(orig|rej|bak)$",
        r"\.sqlite3?(-wal|-shm|-journal)?$",
        r"_pb2(_grpc)?\.pyi?$",
        r"_keel\.pyi?$",
        r"^\.keel-gen\.json$",
    )

    def __init__(self, ignore_paths: Sequence[Path]) -> None:
        super().__init__(ignore_paths=[str(p) for p in ignore_paths])


def relative(
    batch: Collection[tuple[Change, str]],
    root: Path,
    accept: Callable[[Change, str], bool] = lambda change, path: True,
) -> list[str]:
    """The changed files under `root`, relative to it (posix), sorted; a file that came and
    went within the batch (an editor's or sed's temp file, renamed over the real one) is none,
    nor is a folder. A new folder counts with the files in it that `accept` keeps: files
    written into a folder just made can come before the folder is watched, unseen."""
    added = {path for change, path in batch if change == Change.added}
    paths = set()
    for _, path in batch:
        if path in added and not os.path.lexists(path):
            continue
        if not os.path.isdir(path):
            paths.add(path)
        elif path in added:
            paths |= _files_in(path, accept)
    found = set()
    for path in paths:
        rel = os.path.relpath(path, root)
        if not rel.startswith(".."):
            found.add(Path(rel).as_posix())
    return sorted(found)


def _files_in(folder: str, accept: Callable[[Change, str], bool]) -> set[str]:
    found = set()
    for parent, folders, files in os.walk(folder):
        folders[:] = [f for f in folders if accept(Change.added, os.path.join(parent, f))]
        found |= {p for f in files if accept(Change.added, p := os.path.join(parent, f))}
    return found


def runs_in_service(path: str, services: str) -> bool:
    """False for what a service folder holds but the running service does not load."""
    if not path.startswith(f"{services}/"):
        return True
    parts = path.split("/")
    return "tests" not in parts[2:] and not path.endswith((".md", "Dockerfile", ".dockerignore"))


is_keel = affected.is_keel_itself
"""Keel itself (as `keel affected` counts it): everything restarts, the gateway too."""


@dataclass(frozen=True)
class Saved:
    """One batch of saved files, sorted into what keel dev does with each."""

    protos: tuple[str, ...]
    """`.proto` files: regenerate, then restart the services they touch and the gateway."""
    code: tuple[str, ...]
    """Everything else that runs: restart the services it touches."""

    @classmethod
    def sort(cls, paths: Iterable[str], services: str) -> Saved:
        kept = [p for p in paths if runs_in_service(p, services)]
        return cls(
            tuple(p for p in kept if p.endswith(".proto")),
            tuple(p for p in kept if not p.endswith(".proto")),
        )

    def __bool__(self) -> bool:
        return bool(self.protos or self.code)

    def describe(self) -> str:
        shown = [*self.protos, *self.code]
        return ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")


def touched(
    paths: Iterable[str], contracts: Contracts, packages: list[Package], gen: str
) -> set[str]:
    """The service folders (names) that `paths` touch."""
    return set(affected.affected(paths, contracts, packages, gen))
