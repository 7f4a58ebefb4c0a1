"""A warm spare of a child process: `python -m keel.dev.spare [--preload M]... [--fresh DIR]...
-- MODULE ARGS...` imports the libraries MODULE will need, then waits; a line on stdin runs
`python -m MODULE ARGS...` in it (EOF: it exits). keel dev keeps one per child, so a restart
skips most of the interpreter's start-up (importing gRPC, SQLAlchemy, Alembic, uvicorn and
Keel takes most of a service's second or two).

Nothing under a `--fresh` folder (the service's own code, gen/) is imported ahead: if a preloaded
module did import one, the spare starts MODULE in a new interpreter instead. A spare holds the
Keel and libraries of the moment it started: keel dev replaces them when Keel itself changes.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import os
import runpy
import signal
import sys
from pathlib import Path

UVICORN = (
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.lifespan.on",
)
"""What uvicorn imports by name when it starts (REST in the service, the gateway)."""
KEEL_SERVICE = (
    "keel",
    "keel.runtime.server",
    "keel.gateway.inservice",
    "keel.gateway.listener",
    "keel.data",
    "keel.data.migrations",
    "keel.events",
    "keel.idempotency",
    *UVICORN,
)
"""What `keel.serve` with REST, a database, migrations and events loads (what is missing from an
installation is skipped)."""
KEEL_GATEWAY = ("keel.gateway.serve", "keel.gateway.app", "keel.gateway.listener", *UVICORN)
KEEL_GEN = (
    "keel.events.dlq",
    "keel.mock.cli",
    "keel.codegen.pipeline",
    "keel.codegen.plugin",
    "keel.codegen.grpc_python",
    "keel.toolchain.image",
    "keel.genroot",
    "mypy_protobuf.main",
)
"""What `keel gen` loads (`python -m keel.cli gen`)."""


def imported_by(src: Path, package: str) -> list[str]:
    """The modules a service's package imports, other than its own (read, not imported)."""
    found: set[str] = set()
    for source in sorted((src / package).rglob("*.py")):
        try:
            tree = ast.parse(source.read_text(), filename=str(source))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue  # the service's own start will say what is wrong
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
    return sorted(m for m in found if m.partition(".")[0] != package)


def _under(path: str | None, folders: list[Path]) -> bool:
    if not path:
        return False
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(folder) for folder in folders)


def _fresh_module(name: str, fresh: list[Path]) -> bool:
    """Whether `name`'s top-level package lives under a fresh folder (or cannot be found)."""
    try:
        spec = importlib.util.find_spec(name.partition(".")[0])
    except (ImportError, ValueError):
        return True
    if spec is None:
        return True
    places = [spec.origin, *(spec.submodule_search_locations or [])]
    return any(_under(place, fresh) for place in places)


def preload(names: list[str], fresh: list[Path]) -> bool:
    """Import `names` (those that can be imported and are not fresh); whether nothing under a
    fresh folder came with them."""
    for name in names:
        if _fresh_module(name, fresh):
            continue
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    loaded = list(sys.modules.values())
    return not any(_under(getattr(module, "__file__", None), fresh) for module in loaded)


def _arguments(argv: list[str]) -> tuple[list[str], list[Path], list[str]]:
    names: list[str] = []
    fresh: list[Path] = []
    index = 0
    while argv[index] != "--":
        if argv[index] == "--preload":
            names.append(argv[index + 1])
        elif argv[index] == "--fresh":
            fresh.append(Path(argv[index + 1]).resolve())
        index += 2
    return names, fresh, argv[index + 1 :]


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in the terminal: go, quietly
    names, fresh, command = _arguments(sys.argv[1:])
    clean = preload(names, fresh)
    sys.stdout.write("keel.dev.spare: ready\n")  # keel.dev.warm.READY
    sys.stdout.flush()
    if not sys.stdin.readline():
        return  # keel dev went away, or no longer needs it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if not clean:
        os.execv(sys.executable, [sys.executable, "-m", *command])
    sys.argv = ["", *command[1:]]
    runpy.run_module(command[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
