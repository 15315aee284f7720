"""Waiting until the system has gone quiet: the checker must read a state nothing is changing.

Quiet means, for several consecutive probes: every order is in a terminal status, no outbox holds
an unpublished row, and every queue of the run's namespace is empty, its delayed-retry queues too
(a message waiting out a retry delay is still to be applied).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aio_pika
import aio_pika.exceptions
from aio_pika.abc import AbstractConnection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.stack import SERVICES, STACK_RETRY_BACKOFF
from services.orders.saga.state import TERMINAL
from shared.topology import Names

TERMINAL_SQL = "(" + ", ".join(f"'{s}'" for s in sorted(TERMINAL)) + ")"


@dataclass(frozen=True)
class Probe:
    open_orders: int
    unpublished: int
    queued: int

    @property
    def quiet(self) -> bool:
        return self.open_orders == 0 and self.unpublished == 0 and self.queued == 0


async def probe(engines: dict[str, AsyncEngine], rabbitmq_url: str, namespace: str) -> Probe:
    async with engines["orders"].connect() as conn:
        open_orders = (
            await conn.execute(
                text(f"SELECT count(*) FROM orders WHERE status NOT IN {TERMINAL_SQL}")
            )
        ).scalar_one()
    unpublished = 0
    for service in SERVICES:
        async with engines[service].connect() as conn:
            unpublished += (
                await conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
            ).scalar_one()
    names = Names(namespace)
    queued = 0
    connection = await aio_pika.connect(rabbitmq_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        for service in SERVICES:
            queue = await channel.declare_queue(names.queue(service), passive=True)
            queued += queue.declaration_result.message_count or 0
            for retry_queue in names.retry_queues(service, STACK_RETRY_BACKOFF):
                queued += await _depth(connection, retry_queue)
    return Probe(int(open_orders), int(unpublished), queued)


async def _depth(connection: AbstractConnection, queue: str) -> int:
    """A queue's ready messages; 0 if it does not exist (a retry queue is declared by its
    service's consumer): a passive declare of a missing queue closes its channel."""
    async with connection.channel() as channel:
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return 0
        return declared.declaration_result.message_count or 0


async def wait_quiet(
    engines: dict[str, AsyncEngine],
    rabbitmq_url: str,
    namespace: str,
    *,
    within: float,
    stable_probes: int = 3,
    interval: float = 1.0,
) -> tuple[bool, float, Probe]:
    """(quiet?, seconds waited, last probe). Transient probe errors count as not quiet."""
    started = time.monotonic()
    streak = 0
    last = Probe(-1, -1, -1)
    while time.monotonic() - started < within:
        try:
            last = await probe(engines, rabbitmq_url, namespace)
        except Exception:  # a restarting broker or database: not quiet yet
            streak = 0
        else:
            streak = streak + 1 if last.quiet else 0
            if streak >= stable_probes:
                return True, time.monotonic() - started, last
        await asyncio.sleep(interval)
    return False, time.monotonic() - started, last
