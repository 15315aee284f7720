"""Group commit on its own, without a database: what queues up while units run is applied
together, a failed group item by item, and every waiter hears only about its own item."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

import pytest

from shared.group_commit import GroupCommit


class Boom(Exception):
    pass


class Store:
    """Stands in for the database: records every unit it applied, fails the items named in
    `failing`, and holds every unit at `gate` until the test opens it."""

    def __init__(self, *, failing: frozenset[str] = frozenset()) -> None:
        self.failing = failing
        self.gate = asyncio.Event()
        self.gate.set()
        self.units: list[list[str]] = []  # every call of apply_together, failed ones too
        self.alone: list[str] = []  # every call of apply_alone
        self.running = 0
        self.most_running = 0

    async def together(self, items: list[str]) -> list[str]:
        self.units.append(list(items))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        if self.failing & set(items):
            raise Boom(f"group {items} failed")
        return [f"{item}: together" for item in items]

    async def apply_alone(self, item: str) -> str:
        self.alone.append(item)
        if item in self.failing:
            raise Boom(f"{item} failed")
        return f"{item}: alone"

    def commit(
        self,
        *,
        max_batch: int = 8,
        max_concurrent: int = 1,
        groupable: Callable[[str], bool] | None = None,
        key: Callable[[str], Hashable] | None = None,
        linger: bool = False,
    ) -> GroupCommit[str, str]:
        return GroupCommit(
            apply_together=self.together,
            apply_alone=self.apply_alone,
            max_batch=max_batch,
            max_concurrent=max_concurrent,
            groupable=groupable,
            key=key,
            linger=linger,
            name="test",
        )


async def started(coro: Coroutine[Any, Any, str]) -> asyncio.Task[str]:
    """The submission as its own task, run until it waits (as a delivery or a request does)."""
    task = asyncio.create_task(coro)
    await asyncio.sleep(0)
    return task


async def busy_then(
    store: Store, commit: GroupCommit[str, str], first: str, *queued: str
) -> list[asyncio.Task[str]]:
    """`first` starts a unit that holds at the gate; `queued` are submitted while it runs."""
    store.gate.clear()
    tasks = [await started(commit.submit(first))]
    tasks += [await started(commit.submit(item)) for item in queued]
    return tasks


async def test_a_lone_item_is_applied_at_once_in_a_unit_of_its_own() -> None:
    store = Store()
    commit = store.commit()

    assert await commit.submit("a") == "a: together"
    assert store.units == [["a"]]
    assert commit.groups == 0


async def test_items_that_queue_while_a_unit_runs_are_applied_together_in_order() -> None:
    store = Store()
    commit = store.commit()
    tasks = await busy_then(store, commit, "a", "b", "c", "d")

    store.gate.set()

    assert await asyncio.gather(*tasks) == [f"{i}: together" for i in "abcd"]
    assert store.units == [["a"], ["b", "c", "d"]]
    assert commit.groups == 1


async def test_a_failing_group_is_applied_item_by_item_and_only_the_failing_item_fails() -> None:
    store = Store(failing=frozenset({"c"}))
    commit = store.commit()
    tasks = await busy_then(store, commit, "a", "b", "c", "d")

    store.gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert outcomes[:2] == ["a: together", "b: alone"]
    assert isinstance(outcomes[2], Boom) and str(outcomes[2]) == "c failed"
    assert outcomes[3] == "d: alone"
    assert store.units == [["a"], ["b", "c", "d"]]
    assert store.alone == ["b", "c", "d"]
    assert commit.groups == 0  # the group was rolled back


async def test_a_lone_item_that_fails_is_not_tried_again_on_its_own() -> None:
    store = Store(failing=frozenset({"a"}))
    commit = store.commit()

    with pytest.raises(Boom):
        await commit.submit("a")
    assert store.alone == []


async def test_items_that_may_not_be_grouped_are_never_grouped() -> None:
    store = Store()
    commit = store.commit(groupable=lambda item: not item.startswith("solo"))
    tasks = await busy_then(store, commit, "a", "solo1", "b", "solo2", "c", "d")

    store.gate.set()
    await asyncio.gather(*tasks)

    # The first waiting item goes alone; the next unit gathers the groupable ones past the
    # second solo item, which waits for a unit of its own.
    assert store.units == [["a"], ["solo1"], ["b", "c", "d"], ["solo2"]]
    assert commit.groups == 1


async def test_a_unit_takes_at_most_max_batch_items() -> None:
    store = Store()
    commit = store.commit(max_batch=3)
    tasks = await busy_then(store, commit, "a", *"bcdefgh")

    store.gate.set()
    await asyncio.gather(*tasks)

    assert store.units == [["a"], ["b", "c", "d"], ["e", "f", "g"], ["h"]]
    assert commit.groups == 2  # the last unit holds one item: not a group


async def test_up_to_max_concurrent_units_run_at_once_and_the_rest_waits_for_them() -> None:
    store = Store()
    commit = store.commit(max_concurrent=2)
    tasks = await busy_then(store, commit, "a", "b", "c", "d")

    store.gate.set()
    await asyncio.gather(*tasks)

    assert store.units == [["a"], ["b"], ["c", "d"]]
    assert store.most_running == 2


async def test_a_lingering_unit_gathers_what_is_submitted_in_the_same_turn() -> None:
    store = Store()
    commit = store.commit(linger=True)

    results = await asyncio.gather(*(commit.submit(item) for item in "abc"))

    assert results == [f"{i}: together" for i in "abc"]
    assert store.units == [["a", "b", "c"]]


async def test_copies_of_one_item_that_fail_are_not_split_into_tries_of_their_own() -> None:
    store = Store(failing=frozenset({"a"}))
    commit = store.commit(linger=True, key=lambda item: item)

    outcomes = await asyncio.gather(commit.submit("a"), commit.submit("a"), return_exceptions=True)

    assert [type(o) for o in outcomes] == [Boom, Boom]
    assert store.units == [["a", "a"]]
    assert store.alone == []


async def test_a_waiter_that_goes_away_leaves_its_unit_to_the_others() -> None:
    store = Store()
    commit = store.commit()
    tasks = await busy_then(store, commit, "a", "b", "c")

    tasks[1].cancel()  # the client of "b" hangs up while it waits
    store.gate.set()

    assert await tasks[0] == "a: together"
    assert await tasks[2] == "c: together"
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert store.units == [["a"], ["b", "c"]]  # still applied: it may have been answered already


async def test_stopping_cancels_the_running_unit_and_everyone_waiting_for_the_next() -> None:
    store = Store()
    commit = store.commit()
    tasks = await busy_then(store, commit, "a", "b", "c")

    await commit.stop()

    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task
    assert store.units == [["a"]]  # nothing more started
    store.gate.set()
    assert await commit.submit("d") == "d: together"  # a later item starts afresh
