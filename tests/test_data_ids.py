"""keel.data.new_id: unique across processes, forked workers and restarts; ordered by time."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from keel.data import ids, new_id

_MAKE = "from keel.data import new_id; print(' '.join(new_id('o') for _ in range(3000)))"


def _made_in_a_fork(count: int) -> list[str]:
    return [new_id("o") for _ in range(count)]


def test_ids_look_like_prefix_and_26_crockford_characters() -> None:
    made = new_id("o")
    prefix, _, body = made.partition("_")
    assert prefix == "o"
    assert len(body) == 26
    assert set(body) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    assert len(new_id()) == 26
    now = time.time_ns() // 1_000_000
    assert abs(ids.id_time_ms(made) - now) < 60_000  # the clock's millisecond, roughly now


def test_ids_within_a_process_strictly_increase() -> None:
    made = [new_id("o") for _ in range(20_000)]  # many share a millisecond
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_ids_from_separate_processes_never_repeat_and_sort_by_time() -> None:
    """Restarts and replicas: fresh interpreters, at the same time and one after another."""
    runs = [
        subprocess.Popen([sys.executable, "-c", _MAKE], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    batches = [run.communicate(timeout=60)[0].split() for run in runs]
    later = subprocess.run(
        [sys.executable, "-c", _MAKE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    every = [made for batch in [*batches, later] for made in batch]
    assert len(set(every)) == len(every) == 4 * 3000
    for batch in batches:
        assert batch == sorted(batch)
    assert max(max(batch) for batch in batches) < min(later)  # made later: sorts after


def test_forked_workers_do_not_continue_their_parents_count() -> None:
    """KEEL_WORKERS forks after the parent may have made ids: each child starts afresh."""
    before = [new_id("o") for _ in range(1000)]
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        children = pool.map(_made_in_a_fork, [3000] * 4)
    every = before + [made for batch in children for made in batch]
    assert len(set(every)) == len(every)
    assert os.getpid()  # the parent is untouched


@given(st.integers(0, (1 << 128) - 1), st.integers(0, (1 << 128) - 1))
def test_the_encoding_keeps_the_order_of_numbers(a: int, b: int) -> None:
    assert (a < b) == (ids.encode(a) < ids.encode(b))
    assert (a == b) == (ids.encode(a) == ids.encode(b))


@pytest.mark.parametrize("bad", ["O", "1x", "o_", "a" * 17])
def test_a_bad_prefix_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        new_id(bad)
