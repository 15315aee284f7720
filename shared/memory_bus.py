"""In-process bus for the one-command demo and fast unit tests.

Same contract as RabbitBus: one queue per service with the same bindings, at-least-once delivery,
a transient failure redelivered after the same growing delays until the retry horizon, then a
dead-letter list with the reason. Never a stand-in for RabbitMQ in integration tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.delivery import (
    DeadLetter,
    MessageCallback,
    Outcome,
    RetryPolicy,
    deliver,
    horizon_reason,
)
from shared.messages import Envelope, MalformedMessage, decode
from shared.topology import SERVICES, event_types

log = logging.getLogger("shared.memory_bus")


@dataclass
class _Queued:
    body: bytes
    # As the headers of a parked message on RabbitMQ: failures so far, and since when.
    attempts: int = 0
    first_failure: float | None = None


@dataclass
class _Queue:
    items: asyncio.Queue[_Queued] = field(default_factory=asyncio.Queue)
    dead: list[DeadLetter] = field(default_factory=list)


class MemoryBus:
    def __init__(self, *, concurrency: int = 8, retry: RetryPolicy | None = None) -> None:
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self._queues = {service: _Queue() for service in SERVICES}
        self._routes: dict[str, list[str]] = {}
        for service in SERVICES:
            for message_type in event_types(service):
                self._routes.setdefault(message_type, []).append(service)
        self._workers: list[asyncio.Task[None]] = []
        # Messages waiting out their retry delay, as in RabbitMQ's retry queues.
        self._parked: dict[int, asyncio.TimerHandle] = {}
        self._parks = itertools.count()

    async def start(self) -> None:
        return None

    async def publish(self, envelope: Envelope) -> None:
        body = envelope.to_bytes()
        if envelope.kind == "command":
            if envelope.target not in self._queues:
                raise LookupError(f"no queue for command target {envelope.target!r}")
            targets = [envelope.target]
        else:
            targets = self._routes.get(envelope.type, [])
        for service in targets:
            self._queues[service].items.put_nowait(_Queued(body))

    def publish_raw(self, service: str, body: bytes) -> None:
        """Put arbitrary bytes on a queue, as a misbehaving producer could."""
        self._queues[service].items.put_nowait(_Queued(body))

    async def subscribe(self, service: str, callback: MessageCallback) -> None:
        for _ in range(self.concurrency):
            self._workers.append(asyncio.create_task(self._work(service, callback)))

    async def _work(self, service: str, callback: MessageCallback) -> None:
        queue = self._queues[service]
        while True:
            item = await queue.items.get()
            verdict = await deliver(item.body, callback)
            if verdict.outcome is Outcome.DEAD:
                queue.dead.append(_dead_letter(item.body, verdict.reason))
            elif verdict.outcome is Outcome.RETRY:
                self._retry_later(queue, item, verdict.reason)

    def _retry_later(self, queue: _Queue, item: _Queued, error: str) -> None:
        plan = self.retry.plan(
            attempts=item.attempts, first_failure=item.first_failure, now=time.time()
        )
        item.attempts, item.first_failure = plan.attempt, plan.first_failure
        if plan.delay is None:
            log.error("retry horizon passed, dead-lettering: %s", error)
            queue.dead.append(_dead_letter(item.body, horizon_reason(error)))
            return
        # The worker moves on meanwhile, as a RabbitMQ consumer does once it parked a message.
        park = next(self._parks)
        loop = asyncio.get_running_loop()
        self._parked[park] = loop.call_later(plan.delay, self._unpark, park, queue, item)

    def _unpark(self, park: int, queue: _Queue, item: _Queued) -> None:
        del self._parked[park]
        queue.items.put_nowait(item)

    def parked(self) -> int:
        """Messages waiting out a retry delay."""
        return len(self._parked)

    def pending(self, service: str) -> int:
        return self._queues[service].items.qsize()

    async def backlog(self, services: Sequence[str]) -> int:
        return sum(self.pending(service) for service in services)

    async def dead_letters(self, service: str, limit: int = 100) -> list[DeadLetter]:
        return list(self._queues[service].dead[:limit])

    async def replay_dead_letters(self, service: str) -> int:
        queue = self._queues[service]
        keep: list[DeadLetter] = []
        replayed = 0
        for letter in queue.dead:
            try:
                decode(letter.body)
            except MalformedMessage:
                keep.append(letter)
                continue
            queue.items.put_nowait(_Queued(letter.body))
            replayed += 1
        queue.dead = keep
        return replayed

    def is_connected(self) -> bool:
        return True

    async def close(self) -> None:
        for handle in self._parked.values():
            handle.cancel()
        self._parked.clear()
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()


def _dead_letter(body: bytes, reason: str) -> DeadLetter:
    try:
        envelope = decode(body)
        return DeadLetter(envelope.id, envelope.type, reason, body)
    except MalformedMessage:
        return DeadLetter(None, None, reason, body)
