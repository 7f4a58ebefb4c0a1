"""`python -m keel.dev.tether PARENT COMMAND...`: run COMMAND (exec, same process) so that it gets
SIGTERM when `keel dev` (process PARENT) dies, even by SIGKILL: no service, spare, gateway or
broker outlives it holding its ports. Linux's PR_SET_PDEATHSIG, which survives exec; elsewhere
COMMAND simply runs."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1


def tethered(command: Sequence[str]) -> list[str]:
    """`command`, run so that it ends when this process dies."""
    return [sys.executable, "-m", "keel.dev.tether", str(os.getpid()), *command]


def main(argv: Sequence[str]) -> None:
    parent, *command = argv
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != int(parent):  # it died before the line above: end now
            sys.exit(1)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
