"""In-process bus for the one-command demo and fast unit tests.

Same contract as RabbitBus: one queue per service with the same bindings, at-least-once delivery,
redelivery up to the delivery limit, then a dead-letter list with the reason. Never a stand-in for
RabbitMQ in integration tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.delivery import DeadLetter, MessageCallback, Outcome, deliver
from shared.messages import Envelope, MalformedMessage, decode
from shared.topology import SERVICES, event_types

log = logging.getLogger("shared.memory_bus")


@dataclass
class _Queued:
    body: bytes
    deliveries: int = 0


@dataclass
class _Queue:
    items: asyncio.Queue[_Queued] = field(default_factory=asyncio.Queue)
    dead: list[DeadLetter] = field(default_factory=list)


class MemoryBus:
    def __init__(self, *, concurrency: int = 8, delivery_limit: int = 5) -> None:
        self.concurrency = concurrency
        self.delivery_limit = delivery_limit
        self._queues = {service: _Queue() for service in SERVICES}
        self._routes: dict[str, list[str]] = {}
        for service in SERVICES:
            for message_type in event_types(service):
                self._routes.setdefault(message_type, []).append(service)
        self._workers: list[asyncio.Task[None]] = []

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
            item.deliveries += 1
            verdict = await deliver(item.body, callback)
            if verdict.outcome is Outcome.DEAD:
                queue.dead.append(_dead_letter(item.body, verdict.reason))
            elif verdict.outcome is Outcome.RETRY:
                if item.deliveries >= self.delivery_limit:
                    queue.dead.append(_dead_letter(item.body, "delivery limit: " + verdict.reason))
                else:
                    await asyncio.sleep(min(0.05 * 2**item.deliveries, 2.0))
                    queue.items.put_nowait(item)

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
