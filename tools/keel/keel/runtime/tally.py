"""gRPC call counts as flat arrays of numbers, reported as go-grpc-prometheus metric families.

prometheus_client's counters cost four Python calls and a lock per increment, and in its
multiprocess mode a memory-mapped write as well: a tenth to a fifth of an echo call. Keel counts
each method's calls in one array of doubles instead (a few index updates per call) and a
collector turns the arrays into metric families when the registry is scraped.

In one process an array is private memory. When worker processes share a port
(`PROMETHEUS_MULTIPROC_DIR` is set, see keel.runtime.workers) it is a small memory-mapped file
in that folder, one per side (server or client), method and process, and whoever serves
/metrics sums the files, so the numbers are as fresh as a single process's. Files of workers
that have exited stay, so counters never go backwards (as with prometheus_client's own files).

Writers: an increment is one read and one store with no switch between threads in between
under CPython's GIL, so no lock is taken (prometheus_client takes one; a free-threaded build
would need it). Readers load each aligned 8-byte value through a mapping, so a value is never
seen half-written.
"""

from __future__ import annotations

import itertools
import json
import mmap
import os
import struct
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Literal, Protocol

import grpc
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

Side = Literal["server", "client", "http"]
"""Whose counts: a gRPC server's, a gRPC client's, or an edge's HTTP requests (httpmetrics)."""
SIDES: tuple[Side, ...] = ("server", "client")
"""The gRPC sides, reported by TallyCollector."""
Labels = tuple[str, str, str]
"""grpc_type, grpc_service, grpc_method (an edge's: method, route, status)."""


class Counts(Protocol):
    """One method's slots (an array in memory, or a view of a memory-mapped file)."""

    def __getitem__(self, slot: int, /) -> float: ...
    def __setitem__(self, slot: int, value: float, /) -> None: ...


LABEL_NAMES = ("grpc_type", "grpc_service", "grpc_method")
BOUNDS: tuple[float, ...] = tuple(Histogram.DEFAULT_BUCKETS[:-1])  # the last is +Inf
_LE = [floatToGoString(bound) for bound in Histogram.DEFAULT_BUCKETS]  # type: ignore[no-untyped-call]

# The slots of one method's array.
STARTED, RECEIVED, SENT, SECONDS = 0, 1, 2, 3
_HANDLED = 4
HANDLED = {code: _HANDLED + code.value[0] for code in grpc.StatusCode}
"""The slot counting calls that ended with each status."""
BUCKETS = _HANDLED + len(HANDLED)
"""The first of the histogram's per-bucket counts (not cumulative; the last is +Inf)."""
SIZE = BUCKETS + len(BOUNDS) + 1

_CODE_SLOTS = sorted((slot, code.name) for code, slot in HANDLED.items())
_MAGIC = b"keeltly1"
_SUFFIX = ".tally"  # prometheus_client's MultiProcessCollector reads only *.db
_serial = itertools.count()

_HELP: dict[Side, dict[str, str]] = {  # go-grpc-prometheus's own texts
    "server": {
        "started": "RPCs started on the server.",
        "handled": "RPCs completed on the server, regardless of success or failure.",
        "received": "RPC stream messages received on the server.",
        "sent": "gRPC stream messages sent on the server.",
        "seconds": "Histogram of response latency (seconds) of gRPC that had been "
        "application-level handled by the server.",
    },
    "client": {
        "started": "RPCs started on the client.",
        "handled": "RPCs completed by the client, regardless of success or failure.",
        "received": "RPC stream messages received by the client.",
        "sent": "gRPC stream messages sent by the client.",
        "seconds": "Histogram of response latency (seconds) of the gRPC until it is finished "
        "by the application.",
    },
}


def private_counts(size: int = SIZE) -> Counts:
    """A zeroed array of `size` slots for one method, in this process's memory (a view of
    doubles, as a shared file's: an increment through it costs half one through an `array`,
    which parses each value it stores)."""
    return memoryview(bytearray(8 * size)).cast("d")


def finish(counts: Counts, code: grpc.StatusCode, seconds: float) -> None:
    """Count one finished call: its status and its duration."""
    counts[_HANDLED + code._value_[0]] += 1  # HANDLED[code], without hashing the enum
    counts[BUCKETS + bisect_left(BOUNDS, seconds)] += 1
    counts[SECONDS] += seconds


def _padded(length: int) -> int:
    return -(-length // 8) * 8


def shared_counts(folder: str, side: Side, labels: Labels, size: int = SIZE) -> Counts:
    """A zeroed array of `size` slots for one label set (a method's), in a memory-mapped file of
    `folder` that siblings read."""
    header = json.dumps(labels).encode()
    offset = 16 + _padded(len(header))
    # The random part keeps a reused pid (a restarted container) from replacing older counts.
    name = f"keel_{side}_{os.getpid()}_{next(_serial)}_{os.urandom(4).hex()}{_SUFFIX}"
    path = Path(folder, name)
    temporary = path.with_suffix(".tmp")  # readers never see a file without its header
    layout = _MAGIC + struct.pack("<Q", len(header)) + header
    temporary.write_bytes(layout.ljust(offset, b" ") + bytes(8 * size))
    temporary.replace(path)
    with path.open("r+b") as file:
        mapped = mmap.mmap(file.fileno(), offset + 8 * size)
    return memoryview(mapped)[offset:].cast("d")  # the view keeps the mapping alive


def read_shared(folder: str, side: Side, size: int = SIZE) -> dict[Labels, array[float]]:
    """Every process's counts of one side in `folder` (arrays of `size` slots), summed per label
    set; bad files skipped."""
    totals: dict[Labels, array[float]] = {}
    for path in sorted(Path(folder).glob(f"keel_{side}_*{_SUFFIX}")):
        found = _read_file(path, size)
        if found is not None:
            labels, counts = found
            row = totals.setdefault(labels, array("d", bytes(8 * size)))
            for slot in range(size):
                row[slot] += counts[slot]
    return totals


def _read_file(path: Path, size: int) -> tuple[Labels, array[float]] | None:
    """One file's labels and counts, or None if it is gone or is not a whole count file."""
    try:
        with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:8] != _MAGIC:
                return None
            (length,) = struct.unpack_from("<Q", data, 8)
            offset = 16 + _padded(length)
            if len(data) < offset + 8 * size:
                return None
            found = json.loads(data[16 : 16 + length])
            if not (isinstance(found, list) and len(found) == 3):
                return None
            labels = (str(found[0]), str(found[1]), str(found[2]))
            view = memoryview(data)[offset : offset + 8 * size].cast("d")
            try:
                counts = array("d", (view[slot] for slot in range(size)))  # aligned loads
            finally:
                view.release()
    except (OSError, ValueError, struct.error):  # gone, empty, or not ours (json too)
        return None
    return labels, counts


class TallyCollector:
    """Reports per-method counts as go-grpc-prometheus metric families when scraped."""

    def __init__(self, side: Side, source: Callable[[], Mapping[Labels, Counts]]) -> None:
        self._side = side
        self._source = source

    def describe(self) -> list[Metric]:
        return list(_families(self._side))

    def collect(self) -> Iterator[Metric]:
        started, handled, received, sent, seconds = _families(self._side)
        for labels, counts in sorted(self._source().items()):
            started.add_metric(labels, counts[STARTED])
            received.add_metric(labels, counts[RECEIVED])
            sent.add_metric(labels, counts[SENT])
            for slot, name in _CODE_SLOTS:
                if counts[slot]:
                    handled.add_metric((*labels, name), counts[slot])
            seconds.add_metric(labels, buckets=buckets(counts, BUCKETS), sum_value=counts[SECONDS])
        yield from (started, handled, received, sent, seconds)


def buckets(counts: Counts, first: int) -> list[tuple[str, float]]:
    """A histogram's cumulative buckets (`le`, count) from its per-bucket counts at `first`."""
    cumulative = itertools.accumulate(counts[slot] for slot in range(first, first + len(_LE)))
    return list(zip(_LE, cumulative, strict=True))


def shared_collector(folder: str, side: Side) -> TallyCollector:
    """A collector of every process's counts of one side in `folder` (for /metrics)."""
    return TallyCollector(side, lambda: read_shared(folder, side))


def _families(
    side: Side,
) -> tuple[
    CounterMetricFamily,
    CounterMetricFamily,
    CounterMetricFamily,
    CounterMetricFamily,
    HistogramMetricFamily,
]:
    texts, prefix = _HELP[side], f"grpc_{side}"
    return (
        CounterMetricFamily(f"{prefix}_started", texts["started"], labels=LABEL_NAMES),
        CounterMetricFamily(
            f"{prefix}_handled", texts["handled"], labels=(*LABEL_NAMES, "grpc_code")
        ),
        CounterMetricFamily(f"{prefix}_msg_received", texts["received"], labels=LABEL_NAMES),
        CounterMetricFamily(f"{prefix}_msg_sent", texts["sent"], labels=LABEL_NAMES),
        HistogramMetricFamily(f"{prefix}_handling_seconds", texts["seconds"], labels=LABEL_NAMES),
    )
