"""Several server processes on one port (SO_REUSEPORT), so a service uses every core.

A grpc.aio server is one event loop on one core. `keel.serve(..., workers=N)` forks N worker
processes before any event loop or gRPC object exists; each binds the same port (gRPC sets
SO_REUSEPORT on Linux, so the kernel spreads connections over them) and runs its own loop,
health and servers. Metrics are merged: each worker keeps its gRPC call and HTTP request
counts in memory-mapped files (keel.runtime.tally, keel.runtime.httpmetrics) and any other
metrics in prometheus_client's multiprocess files, all in one shared folder, and the supervising
process serves their sum on KEEL_METRICS_PORT. Each worker has its own copy of in-memory state.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable

import prometheus_client
from prometheus_client import CollectorRegistry, multiprocess, values

from keel.runtime import httpmetrics, listen, logs, metrics, tally
from keel.runtime.config import Settings

_log = logs.get_logger("keel.workers")


_FOLDER_PREFIX = "keel-metrics-"
_OWNER = "owner.lock"
"""A file in each shared metrics folder, locked while its supervisor or a worker of it lives."""


def _share_metrics() -> tuple[str, int]:
    """Switch prometheus_client to multiprocess mode (before any metric exists), in a folder
    of its own: the folder and its owner file's descriptor. The folders of supervisors killed
    before they could remove theirs are removed first."""
    _remove_abandoned(tempfile.gettempdir())
    folder = tempfile.mkdtemp(prefix=_FOLDER_PREFIX)
    owner = _own(folder)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return folder, owner


def _own(folder: str) -> int:
    """Lock the folder's owner file for as long as this process or a worker forked from it
    lives (the lock is the open file's, which workers inherit; the kernel drops it when the
    last of them exits, however they exit). The file is locked before it has its name."""
    unnamed = os.path.join(folder, f".{_OWNER}")
    descriptor = os.open(unnamed, os.O_CREAT | os.O_WRONLY, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    os.rename(unnamed, os.path.join(folder, _OWNER))
    return descriptor


def _remove_abandoned(parent: str) -> None:
    """Remove the shared metrics folders in `parent` whose owner file no process holds."""
    for entry in os.scandir(parent):
        if not entry.name.startswith(_FOLDER_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            descriptor = os.open(os.path.join(entry.path, _OWNER), os.O_RDONLY)
        except OSError:  # not one of these, or being made: left alone
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # in use
            continue
        else:
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(descriptor)


def _merged_registry(folder: str) -> CollectorRegistry:
    """A registry reporting the sum of every worker's metrics in `folder`."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    for side in tally.SIDES:
        registry.register(tally.shared_collector(folder, side))
    registry.register(httpmetrics.shared_collector(folder))
    return registry


def merged_metrics() -> bytes:
    """Prometheus text of this process's metrics, or of every worker's when they share them."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return prometheus_client.generate_latest()
    return prometheus_client.generate_latest(_merged_registry(folder))


def _fork(target: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            target()
        except BaseException:
            _log.exception("worker failed")
            code = 1
        finally:
            sys.stdout.flush()
            os._exit(code)
    return pid


def _terminate(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def run(target: Callable[[], None], settings: Settings, *, serve_metrics: bool = True) -> int:
    """Run `target` in `settings.workers` processes until SIGTERM/SIGINT; 0 if all ended cleanly.

    Metrics are merged on KEEL_METRICS_PORT by this process; with `serve_metrics=False` they
    are still shared, for workers that serve the merged view themselves (see `merged_metrics`).
    """
    merged = bool(settings.metrics_port) and serve_metrics
    if merged:  # before any worker exists
        listen.check_free(settings.host, settings.metrics_port, "metrics (KEEL_METRICS_PORT)")
    share = bool(settings.metrics_port) or not serve_metrics
    folder, owner = _share_metrics() if share else ("", -1)
    metrics.forget_default_metrics()  # each worker makes its own, in the shared folder
    pids = [_fork(target) for _ in range(settings.workers)]
    if merged:
        try:
            listen.serve_metrics(settings.host, settings.metrics_port, _merged_registry(folder))
        except listen.ListenError:  # (taken since it was checked): no worker left behind
            _terminate(pids)
            for pid in pids:
                os.waitpid(pid, 0)
            raise
    stopping = False

    def forward(signum: int, _: object) -> None:
        nonlocal stopping
        stopping = True
        _terminate(pids)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    _log.info("workers started", workers=len(pids), pids=pids)
    failed = False
    remaining = set(pids)
    while remaining:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        remaining.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and not stopping:
            failed = True
            _log.error("worker exited", pid=pid, code=code)
            forward(signal.SIGTERM, None)
    if folder:
        shutil.rmtree(folder)
        os.close(owner)
    return 1 if failed else 0
