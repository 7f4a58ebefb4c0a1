"""Generated code imports whatever its package names.

protoc writes no `__init__.py`, so every folder of a generated root is a namespace package, and
Python lets a regular package or a module of the same name win wherever it sits on `sys.path`:
without help, a proto under `test/proto/` cannot be imported as `test.proto` (the standard
library has a package `test`), nor one under `email/`, `http/`, `json/`, `grpc/`...

`install(root)` puts a finder first on `sys.meta_path` that merges the root's folders into the
package of the same name found elsewhere: `test.__path__` gains `<root>/test`, ahead of the
standard library's folder, so `test.proto.bookstore_pb2` and `test.support` both import. Nothing
is hidden: a package keeps its own modules and subpackages (`google.protobuf` stays protobuf's
when the root has a `google/` folder); only a generated module of the very same name wins. Only
names that are folders at the top of the root are looked at (any other import costs one
dictionary lookup), and a root counts while it is on `sys.path`.

A folder whose name is a module, not a package (`types/`, `typing/`, `json/decoder/`), cannot be
merged: `types.v1` cannot be imported while `types` is the standard library's module, and hiding
that module would break everything that uses it. `unimportable(root, files)` names the generated
files in that case; `keel gen` and the gateway refuse them, with the fix.

`python -m keel_genroot ROOT` prints the lines of a `.pth` file that makes ROOT an import root
of every interpreter of a virtualenv (the Makefile writes it as `keel-gen.pth`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from importlib.machinery import ModuleSpec, PathFinder
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from types import ModuleType

_GENERATED_SUFFIXES = ("_pb2_grpc.pyi", "_pb2_grpc.py", "_pb2.pyi", "_pb2.py", "_keel.py")


class _Finder:
    """First on `sys.meta_path`: merges generated folders into the same-named packages."""

    def __init__(self) -> None:
        self.roots: list[str] = []
        self._tops: dict[str, list[str]] = {}

    def add(self, root: str) -> None:
        """Add a root; the newest comes first (its modules win over an older root's)."""
        if root in self.roots:
            self.roots.remove(root)
        self.roots.insert(0, root)
        self.invalidate_caches()

    def invalidate_caches(self) -> None:
        """Read the top-level folders of every root again (`importlib.invalidate_caches()`)."""
        tops: dict[str, list[str]] = {}
        for root in self.roots:
            try:
                with os.scandir(root) as entries:
                    names = [e.name for e in entries if e.name.isidentifier() and e.is_dir()]
            except OSError:
                continue
            for name in names:
                tops.setdefault(name, []).append(root)
        self._tops = tops

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        roots = self._tops.get(fullname.partition(".")[0])
        if roots is None:
            return None
        on_path = set(sys.path)
        parts = fullname.split(".")
        folders = [
            folder
            for root in roots
            if root in on_path and os.path.isdir(folder := os.path.join(root, *parts))
        ]
        if not folders:
            return None
        spec = _find_elsewhere(fullname, path, target)
        if spec is None:
            # Nothing else has this name here: the parent is a package imported before its
            # folder was merged (say `json`, then `json.v1`). Ours alone, as a namespace package.
            return _namespace(fullname, folders)
        locations = spec.submodule_search_locations
        if locations is None:
            return None  # a module: no folder can be merged into it (see `unimportable`)
        missing = [f for f in folders if f not in locations]
        if missing and isinstance(locations, list):
            locations[:0] = missing  # a regular package: its __path__ gains our folders
        elif missing and spec.loader is None:
            return _namespace(fullname, [*missing, *locations])
        return spec


def _namespace(fullname: str, folders: list[str]) -> ModuleSpec:
    spec = ModuleSpec(fullname, None, is_package=True)
    spec.submodule_search_locations = folders
    return spec


def _find_elsewhere(
    fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
) -> ModuleSpec | None:
    """What the import system would find for `fullname` without Keel's finder."""
    for finder in sys.meta_path:
        if isinstance(finder, _Finder):
            continue
        spec: ModuleSpec | None = None
        if (find := getattr(finder, "find_spec", None)) is not None:
            spec = find(fullname, path, target)
        if spec is not None:
            return spec
    return None


def _finder() -> _Finder:
    for finder in sys.meta_path:
        if isinstance(finder, _Finder):
            return finder
    finder = _Finder()
    sys.meta_path.insert(0, finder)
    return finder


def install(root: str | os.PathLike[str]) -> None:
    """Make the generated code under `root` importable, whatever its package names.

    `root` goes on `sys.path` (first) unless it is there already. Idempotent.
    """
    folder = os.path.abspath(root)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    _finder().add(folder)


class Blocked(NamedTuple):
    """A generated file that cannot be imported: a folder on its way is a module's name."""

    file: str
    """The generated file, relative to its root (`types/v1/money_pb2.py`)."""
    module: str
    """The dotted name that is a module, not a package (`types`)."""
    origin: str
    """Where that module is (a file, or `built in`)."""

    @property
    def proto(self) -> str:
        """The proto file the generated file came from (`types/v1/money.proto`)."""
        for suffix in _GENERATED_SUFFIXES:
            if self.file.endswith(suffix):
                return self.file.removesuffix(suffix) + ".proto"
        return self.file

    def __str__(self) -> str:
        dotted = self.file.rpartition(".")[0].replace("/", ".")
        what = "a module"
        if self.module.partition(".")[0] in sys.stdlib_module_names:
            what += " of the standard library"
        return (
            f"{self.proto}: Python cannot import its module {dotted}: `{self.module}` is {what} "
            f"({self.origin}), not a package. Move the file out of the folder "
            f"`{self.module.replace('.', '/')}/` (e.g. to acme/{self.proto}): Python module paths "
            "follow file paths, not proto packages"
        )


class UnimportableError(Exception):
    """Generated files that cannot be imported (see `unimportable`)."""

    def __init__(self, blocked: Sequence[Blocked]) -> None:
        super().__init__("\n".join(str(b) for b in blocked))
        self.blocked = tuple(blocked)


def unimportable(root: str | os.PathLike[str], files: Iterable[str]) -> list[Blocked]:
    """The generated `files` (paths relative to `root`) that no finder can make importable,
    the first of each proto file.

    A folder of `root` named as a package found elsewhere is merged into it by `install`; one
    named as a module (standard library, built in, installed) blocks every file under it.
    Looks things up without importing them; `root` itself does not count as elsewhere.
    """
    real = os.path.realpath(root)

    def outside(paths: Iterable[str]) -> list[str]:
        kept = []
        for entry in paths:
            resolved = os.path.realpath(entry or os.curdir)
            if resolved != real and not resolved.startswith(real + os.sep):
                kept.append(entry)
        return kept

    search = outside(sys.path)
    known: dict[str, tuple[list[str] | None, str] | None] = {}

    def lookup(name: str, parent: list[str] | None) -> tuple[list[str] | None, str] | None:
        """(search locations, or None for a module; origin) of `name` elsewhere, or None."""
        if name in known:
            return known[name]
        module = sys.modules.get(name)
        if module is not None:
            locations = getattr(module, "__path__", None)
            origin = getattr(module, "__file__", None) or "built in"
        elif (spec := _find_without_root(name, search if parent is None else parent)) is not None:
            locations = spec.submodule_search_locations
            origin = spec.origin if spec.has_location and spec.origin else "built in"
        else:
            known[name] = None
            return None
        known[name] = (None if locations is None else outside(locations), origin)
        return known[name]

    blocked: dict[str, Blocked] = {}
    for file in files:
        parts = file.split("/")[:-1]
        parent: list[str] | None = None
        for depth in range(1, len(parts) + 1):
            if not parts[depth - 1].isidentifier():
                break
            name = ".".join(parts[:depth])
            found = lookup(name, parent)
            if found is None:
                break  # nobody else has this name: the folders below are ours alone
            parent, origin = found
            if parent is None:
                each = Blocked(file, name, origin)
                blocked.setdefault(each.proto, each)
                break
    return list(blocked.values())


def _find_without_root(name: str, path: list[str]) -> ModuleSpec | None:
    """`name` as the import system would find it on `path` (for a top-level name: `sys.path`
    without the root), without importing anything (not even its parent)."""
    top = "." not in name
    for finder in sys.meta_path:
        if isinstance(finder, _Finder):
            continue
        spec: ModuleSpec | None = None
        if finder is PathFinder:
            spec = _find_on_path(name, path)
        elif (find := getattr(finder, "find_spec", None)) is not None:
            spec = find(name, None if top else path)
        if spec is not None:
            return spec
    return None


def _find_on_path(name: str, path: list[str]) -> ModuleSpec | None:
    """PathFinder's search, minus the namespace object it makes (which imports the parent)."""
    portions: list[str] = []
    for entry in path:
        finder = _entry_finder(entry or os.getcwd())
        spec: ModuleSpec | None = finder.find_spec(name) if finder is not None else None
        if spec is None:
            continue
        if spec.loader is not None:
            return spec  # a regular package or a module ends the search
        portions += spec.submodule_search_locations or []
    return _namespace(name, portions) if portions else None


def _entry_finder(entry: str) -> Any:
    """The path entry finder for one `sys.path` entry, as the import system gets it."""
    if entry in sys.path_importer_cache:
        return sys.path_importer_cache[entry]
    for hook in sys.path_hooks:
        try:
            return hook(entry)
        except ImportError:
            continue
    return None


def pth_lines(root: str | os.PathLike[str]) -> str:
    """A `.pth` file's content: `root` on `sys.path`, and `install(root)` at start-up."""
    folder = os.path.abspath(root)
    return f"{folder}\nimport keel_genroot; keel_genroot.install({folder!r})\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m keel_genroot ROOT  (prints the lines of a .pth file)")
    sys.stdout.write(pth_lines(sys.argv[1]))
