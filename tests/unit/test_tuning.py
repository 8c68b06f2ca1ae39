"""The long-running processes' interpreter settings."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from transcare.tuning import MIDDLE, OLD, YOUNG, tune_process


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before, interval = gc.get_threshold(), sys.getswitchinterval()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("restored_gc")
def test_tune_process_freezes_start_up_and_raises_the_thresholds() -> None:
    tune_process()
    assert gc.get_threshold() == (YOUNG, MIDDLE, OLD)
    assert gc.get_freeze_count() > 0
    assert gc.isenabled()  # cycles are still collected


@pytest.mark.usefixtures("restored_gc")
def test_cycles_are_still_collected_after_tuning() -> None:
    import weakref

    tune_process()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    probe = weakref.ref(a)
    del a, b
    gc.collect()
    assert probe() is None


@pytest.mark.parametrize("increment", [0, 10])
def test_lower_priority_raises_the_niceness_of_this_process_only(increment: int) -> None:
    """os.nice cannot be undone in-process, so a child process lowers its own priority."""
    import os
    import subprocess

    code = f"from transcare.tuning import lower_priority; print(lower_priority({increment}))"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
    assert int(child.stdout) == min(19, os.nice(0) + increment)
    assert os.nice(0) == os.getpriority(os.PRIO_PROCESS, 0)  # ours unchanged
