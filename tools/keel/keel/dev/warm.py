"""The keel dev side of a warm spare (keel.dev.spare): started ahead, told to go when needed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from keel.dev.tether import tethered

READY = b"keel.dev.spare: ready\n"
"""What a spare prints once its libraries are imported."""
KILL_AFTER = 15.0
WARM_WAIT = 30.0
"""Seconds a spare may take to import before a start goes without it."""


class Warm:
    """One spare process at a time for `python -m MODULE ARGS` (`command`); `spare` is the
    `python -m keel.dev.spare ... --` in front of `MODULE ARGS`. Lines it prints while it
    imports go to `on_line`."""

    def __init__(
        self,
        spare: Sequence[str],
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path | None = None,
        on_line: Callable[[bytes], None] = lambda line: None,
    ) -> None:
        self.command = list(command)
        self.spare = [*spare, *command[2:]]  # after `python -m`
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.on_line = on_line
        self._process: asyncio.subprocess.Process | None = None
        self._warm: asyncio.Task[bool] | None = None

    async def prepare(self) -> None:
        """Start a spare unless one is running, and wait until it is warm (or gone)."""
        if self._process is None or self._process.returncode is not None:
            self._process = await asyncio.create_subprocess_exec(
                *tethered(self.spare),
                env=self.env,
                cwd=self.cwd,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            self._warm = asyncio.ensure_future(self._until_ready(self._process))
        if self._warm is not None:
            await asyncio.shield(self._warm)

    async def _until_ready(self, process: asyncio.subprocess.Process) -> bool:
        if process.stdout is None:  # pragma: no cover (stdout=PIPE always gives a stream)
            raise RuntimeError("no stdout pipe")
        while line := await process.stdout.readline():
            if line == READY:
                return True
            self.on_line(line)
        return False

    async def take(self) -> asyncio.subprocess.Process | None:
        """The spare, told to go (None if there is none or it died): it was started before,
        so waiting for it to be warm is never slower than starting afresh."""
        process, self._process = self._process, None
        warm, self._warm = self._warm, None
        if process is None or warm is None:
            return None
        try:
            ready = await asyncio.wait_for(asyncio.shield(warm), WARM_WAIT)
        except TimeoutError:
            ready = False
        if not ready:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            return None
        if process.returncode is not None or process.stdin is None:
            return None
        process.stdin.write(b"go\n")
        with contextlib.suppress(ConnectionError):
            await process.stdin.drain()
        return process

    async def discard(self) -> None:
        """End the spare (it holds the Keel and libraries of its start)."""
        process, self._process = self._process, None
        if self._warm is not None:
            self._warm.cancel()
            self._warm = None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), KILL_AFTER)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
