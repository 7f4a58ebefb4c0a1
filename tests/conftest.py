"""Shared helpers: real buf, real keel CLI, real grpc.aio servers on loopback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GOLDEN = REPO / "tests" / "golden"


def keel(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `keel` console script."""
    return subprocess.run(
        [str(BIN / "keel"), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def write_workspace(
    root: Path, files: dict[str, str], modules: tuple[str, ...] = ("proto",)
) -> Path:
    """A buf v2 workspace at `root` with `files` (paths relative to root)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["version: v2", "modules:", *(f"  - path: {m}" for m in modules)]
    (root / "buf.yaml").write_text("\n".join(lines) + "\n")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path → bytes)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def golden_out() -> Iterator[Path]:
    """The committed golden outputs, importable (tests/golden/out on sys.path)."""
    out = GOLDEN / "out"
    sys.path.insert(0, str(out))
    yield out
    sys.path.remove(str(out))


@pytest.fixture
def copy_golden_workspace(tmp_path: Path) -> Path:
    """A private copy of the golden proto workspace."""
    target = tmp_path / "ws"
    shutil.copytree(GOLDEN / "proto", target)
    return target
