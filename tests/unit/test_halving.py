"""A batch with poison items: run whole, then by halves, down to single items given up on."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from transcare.halving import run_halving


class Runner:
    """Applies runs of items, failing any run that holds a poison item."""

    def __init__(self, poison: set[int]) -> None:
        self.poison = poison
        self.tries: list[tuple[int, ...]] = []
        self.applied: list[int] = []
        self.given_up: list[tuple[int, str]] = []

    async def attempt(self, run: Sequence[int]) -> int:
        self.tries.append(tuple(run))
        if self.poison & set(run):
            raise ValueError("poison")
        self.applied.extend(run)
        return len(run)

    async def give_up(self, item: int, exc: Exception) -> None:
        self.given_up.append((item, str(exc)))


@pytest.mark.parametrize(("size", "poison", "max_tries"), [
    (0, set(), 0),
    (1, set(), 1),
    (500, set(), 1),
    (1, {0}, 1),
    (500, {0}, 19),  # 2 log2 500 + 1, not the 501 of trying each event alone
    (500, {250}, 19),
    (500, {499}, 19),
    (500, {3, 400}, 35),
    (7, set(range(7)), 13),  # everything fails: 2n - 1 tries
])
async def test_poison_items_are_given_up_alone_and_the_rest_applied_in_order(
        size: int, poison: set[int], max_tries: int) -> None:
    runner = Runner(poison)
    results = await run_halving(list(range(size)), runner.attempt, runner.give_up)
    assert runner.applied == [i for i in range(size) if i not in poison]
    assert runner.given_up == [(i, "poison") for i in sorted(poison)]
    assert sum(results) == size - len(poison)
    assert len(runner.tries) <= max_tries
    assert all(len(t) > 0 for t in runner.tries)
