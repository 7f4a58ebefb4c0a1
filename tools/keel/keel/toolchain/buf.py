"""Running the `buf` CLI (from PyPI's buf-bin, installed beside this Python)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


class BufError(Exception):
    """buf failed; the message is buf's own (file:line:column: problem)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def buf_executable() -> str:
    """The buf binary: the one installed with this Python, else the first on PATH."""
    beside = Path(sys.executable).parent / "buf"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("buf")
    if found is None:
        raise BufError("buf not found: install keel (it depends on PyPI's buf-bin)", 127)
    return found


def run_buf(args: Sequence[str], cwd: Path) -> str:
    """Run `buf ARGS` in `cwd` without network access; its stdout, or BufError with its stderr."""
    env = {**os.environ, "BUF_CACHE_DIR": os.environ.get("BUF_CACHE_DIR", str(cwd / ".bufcache"))}
    result = subprocess.run(
        [buf_executable(), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip()
        raise BufError(message or f"buf {args[0]} failed", result.returncode)
    return result.stdout
