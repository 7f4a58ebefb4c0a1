"""The ledger test service: its code generated once per test session, its server and tables."""

from __future__ import annotations

import atexit
import functools
import importlib
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from keel.codegen import pipeline

HERE = Path(__file__).resolve().parent


@functools.cache
def generated() -> Path:
    """tests/sagas/proto generated into a temporary folder, which joins sys.path (and is
    removed when the test session's process exits)."""
    out = Path(tempfile.mkdtemp(prefix="keel-ledger-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    pipeline.run(HERE / "proto", out, force=True)
    sys.path.insert(0, str(out))
    return out


def modules() -> tuple[ModuleType, ModuleType]:
    """ledger.v1's ledger_pb2 and ledger_keel modules."""
    generated()
    return (
        importlib.import_module("ledger.v1.ledger_pb2"),
        importlib.import_module("ledger.v1.ledger_keel"),
    )
