"""The long-running processes' garbage-collector settings."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from transcare.gc_tuning import MIDDLE, OLD, YOUNG, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_tune_gc_freezes_start_up_and_raises_the_thresholds() -> None:
    tune_gc()
    assert gc.get_threshold() == (YOUNG, MIDDLE, OLD)
    assert gc.get_freeze_count() > 0
    assert gc.isenabled()  # cycles are still collected


@pytest.mark.usefixtures("restored_gc")
def test_cycles_are_still_collected_after_tuning() -> None:
    import weakref

    tune_gc()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    probe = weakref.ref(a)
    del a, b
    gc.collect()
    assert probe() is None
