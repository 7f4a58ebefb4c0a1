"""What `make gen` does, for `keel dev --watch` after a `.proto` is saved: `buf lint` of the saved
files, `keel gen` (Keel's own option modules too when one of Keel's protos changed), then the
architecture page (`keel graph --write`), each in a subprocess so the Keel on disk runs.

A lint finding or a generation error leaves `gen/` as it was (`keel gen` writes nothing unless
every generator succeeded): the services keep running on the last good generation."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from keel.dev.warm import Warm
from keel.toolchain.buf import buf_executable

KEEL_PROTOS = "tools/keel/keel/protos"
"""Keel's own protos, in Keel's repository: `make gen` generates their option modules first."""
ARCHITECTURE = Path("docs/architecture.md")
"""The page whose system map `make gen` keeps current (`keel graph --write`), if it exists."""


@dataclass(frozen=True)
class Generated:
    """The outcome: whether gen/ is new, what to print, and how long it took."""

    ok: bool
    lines: tuple[str, ...]
    """Lint findings or generation errors (`file:line:column: ...` as buf reports them), or
    keel gen's summary."""
    seconds: float


async def _run(command: Sequence[str], root: Path) -> tuple[int, list[str]]:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=root,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    return await _output(process)


async def _output(process: asyncio.subprocess.Process) -> tuple[int, list[str]]:
    """Its exit status and non-blank lines; ended if the wait is cancelled (Ctrl-C during a
    reload), so nothing writes gen/ after keel dev stopped."""
    try:
        out, _ = await process.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    lines = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
    return await process.wait(), lines


def _keel(*args: str) -> list[str]:
    return [sys.executable, "-m", "keel.cli", *args]


def keel_gen(gen: Path) -> list[str]:
    """`make gen`'s `keel gen` of the workspace (run from its root)."""
    return _keel("gen", "--workspace", ".", "--out", str(gen))


async def _warm_run(warm: Warm) -> tuple[int, list[str]]:
    """Run `warm`'s command in its spare, else afresh."""
    process = await warm.take()
    if process is None:
        return await _run(warm.command, warm.cwd or Path.cwd())
    return await _output(process)


async def regenerate(
    root: Path, gen: Path, protos: Sequence[str], warm: Warm | None = None
) -> Generated:
    """Lint the saved `protos` (paths relative to `root`), then regenerate `gen` from the
    workspace at `root` (in `warm`, a warm spare of `keel_gen(gen)`, if given)."""
    started = time.perf_counter()
    saved = [p for p in protos if (root / p).is_file()]
    if saved:
        paths = [arg for p in saved for arg in ("--path", p)]
        status, lines = await _run([buf_executable(), "lint", *paths], root)
        if status != 0:
            found = tuple(f"buf lint: {line}" for line in lines) or ("buf lint failed",)
            return Generated(False, found, time.perf_counter() - started)
    said: list[str] = []
    if any(p.startswith(f"{KEEL_PROTOS}/") for p in protos):
        options = ("--path", "keel/options", "--path", "buf/validate")
        command = _keel("gen", "--workspace", KEEL_PROTOS, "--out", "tools/keel", *options)
        status, said = await _run(command, root)
        if status != 0:
            return Generated(False, tuple(said), time.perf_counter() - started)
    status, lines = await (_warm_run(warm) if warm else _run(keel_gen(gen), root))
    said += lines
    return Generated(status == 0, tuple(said), time.perf_counter() - started)


async def redraw(root: Path, services: str, gen: Path) -> list[str]:
    """Bring the architecture page's system map and its diagram next to the generated code
    (`gen/system.mmd`, drawn by /docs) up to date, as `make gen` does (nothing without the
    page); what went wrong, if anything."""
    if not (root / ARCHITECTURE).is_file():
        return []
    mermaid = str(gen / "system.mmd")
    command = _keel(
        "graph", "--write", str(ARCHITECTURE), "--mermaid", mermaid, "--services", services
    )
    status, lines = await _run(command, root)
    return [] if status == 0 else lines
