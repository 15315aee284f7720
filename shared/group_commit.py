"""Group commit: items that queue up while units of work run are applied together, in one
transaction and one commit, instead of one each. The dispatcher (messages) and the Stripe
webhook intake (events) use it; each says only how to apply a group in one transaction and how
to apply one item on its own.

A unit takes the first waiting item and, unless that one must go alone, every other waiting
item that may be grouped, up to `max_batch`, in arrival order; at most `max_concurrent` units
run at once, and whatever arrives meanwhile waits for the next. An idle service still applies a
lone item at once. If a group fails it is rolled back and each of its items is applied on its
own, so a failure reaches only the waiter whose item caused it. Every waiter gets its answer
from its unit's future, after the commit that applied its item.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger("shared.group_commit")

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass(eq=False)
class _Waiting(Generic[ItemT, ResultT]):
    item: ItemT
    done: asyncio.Future[ResultT]


class GroupCommit(Generic[ItemT, ResultT]):
    """Applies submitted items in units of work of up to `max_batch` items.

    - `apply_together(items)`: applies a unit in one transaction; one result per item, in order.
      Units of one come here too (an idle service, an item that may not be grouped).
    - `apply_alone(item)`: applies one item of a failed group in a transaction of its own. A unit
      of one item, or of copies of one item (equal `key`), has nothing to fall back to: its
      failure is its waiters' answer.
    - `groupable(item)` False: the item always has a unit of its own (None: every item groups).
    - `linger`: a unit takes its items one event-loop turn after it is started, so that what is
      submitted in the same turn (a burst of concurrent requests) joins it. Otherwise a unit
      takes what waits the moment a slot is free, and a lone item starts on its own at once.
    """

    def __init__(
        self,
        *,
        apply_together: Callable[[list[ItemT]], Awaitable[Sequence[ResultT]]],
        apply_alone: Callable[[ItemT], Awaitable[ResultT]],
        max_batch: int,
        max_concurrent: int = 1,
        groupable: Callable[[ItemT], bool] | None = None,
        key: Callable[[ItemT], Hashable] | None = None,
        linger: bool = False,
        name: str = "group commit",
    ) -> None:
        self.apply_together = apply_together
        self.apply_alone = apply_alone
        self.max_batch = max_batch
        self.max_concurrent = max_concurrent
        self.groupable = groupable
        self.key = key
        self.linger = linger
        self.name = name
        self.groups = 0  # units of work that applied more than one item
        self._waiting: list[_Waiting[ItemT, ResultT]] = []
        # Each running unit's task and the items it applies.
        self._running: dict[asyncio.Task[None], list[_Waiting[ItemT, ResultT]]] = {}
        self._forming = False  # a lingering unit has been started but not taken its items yet

    async def submit(self, item: ItemT) -> ResultT:
        """Applies `item` with whatever else is waiting; its result once its unit committed."""
        waiting: _Waiting[ItemT, ResultT] = _Waiting(
            item, asyncio.get_running_loop().create_future()
        )
        self._waiting.append(waiting)
        self._start_units()
        return await waiting.done

    async def stop(self) -> None:
        """Cancels the running units, as the event loop does when the process stops: their
        waiters and every waiting one are cancelled."""
        units = list(self._running)
        for task in units:
            task.cancel()
        for task in units:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._cancel_waiting()

    def _start_units(self) -> None:
        while self._waiting and len(self._running) < self.max_concurrent and not self._forming:
            if self.linger:
                self._forming = True
                self._run([])  # fills it when it first runs
            else:
                self._run(self._take())

    def _run(self, unit: list[_Waiting[ItemT, ResultT]]) -> None:
        # Each unit is its own task: a waiter that goes away (a client hanging up, a channel
        # closing) cancels only its own wait, never a unit that other waiters share.
        task = asyncio.create_task(self._unit(unit))
        self._running[task] = unit
        task.add_done_callback(self._unit_done)

    def _unit_done(self, task: asyncio.Task[None]) -> None:
        unit = self._running.pop(task)
        for waiting in unit:  # left only by a unit cancelled on stop: nobody waits in vain
            if not waiting.done.done():
                waiting.done.cancel()
        if task.cancelled():
            # Stopping: nothing is answered that a commit did not confirm, and nothing more is
            # started for those still waiting.
            self._forming = False
            self._cancel_waiting()
        self._start_units()

    def _take(self) -> list[_Waiting[ItemT, ResultT]]:
        if self.groupable is None:
            unit, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            return unit
        unit = [self._waiting.pop(0)]
        if self.groupable(unit[0].item):
            rest: list[_Waiting[ItemT, ResultT]] = []
            for waiting in self._waiting:
                joins = self.groupable(waiting.item) and len(unit) < self.max_batch
                (unit if joins else rest).append(waiting)
            self._waiting = rest
        return unit

    async def _unit(self, unit: list[_Waiting[ItemT, ResultT]]) -> None:
        if self.linger:  # take what was submitted since the unit was started
            self._forming = False
            if self._waiting:
                unit.extend(self._take())
            self._start_units()
        if unit:
            await self._apply(unit)

    async def _apply(self, unit: list[_Waiting[ItemT, ResultT]]) -> None:
        items = [waiting.item for waiting in unit]
        try:
            results = await self.apply_together(items)
        except Exception as exc:
            if not self._divisible(items):
                for waiting in unit:
                    _fail(waiting.done, exc)
                return
            log.info(
                "%s: a group of %d failed; applying each on its own",
                self.name,
                len(unit),
                exc_info=True,
            )
        else:
            if len(unit) > 1:
                self.groups += 1
            for waiting, result in zip(unit, results, strict=True):
                _resolve(waiting.done, result)
            return
        for waiting in unit:
            try:
                result = await self.apply_alone(waiting.item)
            except Exception as exc:
                _fail(waiting.done, exc)
            else:
                _resolve(waiting.done, result)

    def _divisible(self, items: list[ItemT]) -> bool:
        if self.key is None:
            return len(items) > 1
        key = self.key
        return len({key(item) for item in items}) > 1

    def _cancel_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for each in waiting:
            each.done.cancel()


# The waiter may have gone before its unit finished (a delivery whose channel closed, a client
# that hung up) and cancelled its future with it; its item was applied all the same, and what
# it was told does not matter any more (a message is redelivered and its inbox row knows).


def _resolve(done: asyncio.Future[ResultT], result: ResultT) -> None:
    if not done.done():
        done.set_result(result)


def _fail(done: asyncio.Future[ResultT], exc: BaseException) -> None:
    if not done.done():
        done.set_exception(exc)
