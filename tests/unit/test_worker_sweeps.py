"""The worker's periodic sweeps (follow-up scheduler, stale-episode sweep) run one at a time,
each ``interval`` after the previous one ended, however long a run takes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from transcare.worker import _every


class TaskCollector:
    """Stands in for the faust app: keeps what ``app.task`` registers."""

    def __init__(self) -> None:
        self.tasks: list[Callable[[], Awaitable[None]]] = []

    def task(self, fn: Callable[[], Awaitable[None]]) -> None:
        self.tasks.append(fn)


async def test_a_sweep_longer_than_its_interval_never_overlaps_the_next() -> None:
    """Regression: as a faust timer, a scheduler sweep of many due steps on a loaded machine
    (5.3 s against a 5 s beat, bench/e2e on PostgreSQL) logged 'Timer ... is overlapping'."""
    app = TaskCollector()
    loop = asyncio.get_running_loop()
    runs: list[tuple[float, float]] = []
    running = 0

    async def scheduler() -> None:
        nonlocal running
        running += 1
        assert running == 1, "two sweeps at once"
        started = loop.time()
        await asyncio.sleep(0.05)  # longer than the interval
        runs.append((started, loop.time()))
        running -= 1

    _every(app, 0.02, scheduler)  # type: ignore[arg-type]
    (task,) = app.tasks
    assert task.__name__ == "scheduler"  # the task is named after its sweep
    running_task = loop.create_task(task())
    await asyncio.sleep(0.3)
    running_task.cancel()
    assert len(runs) >= 3
    for (_, ended), (next_started, _) in zip(runs, runs[1:], strict=False):
        assert next_started - ended >= 0.015  # the interval counts from the end of a run


async def test_a_sweep_that_raises_does_not_stop_the_worker_silently() -> None:
    """The sweeps catch and log their own failures; an error that escapes one is raised out
    of the task for faust to handle, never swallowed by the loop."""
    app = TaskCollector()

    async def broken() -> None:
        raise RuntimeError("defect")

    _every(app, 0.0, broken)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="defect"):
        await app.tasks[0]()
