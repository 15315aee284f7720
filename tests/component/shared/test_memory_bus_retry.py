"""The in-process bus has RabbitMQ's delivery outcomes: a transient failure waits out the same
growing delays and is applied once, past the horizon it is dead-lettered with the last error, a
permanent refusal is dead-lettered at once."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable

import pytest_asyncio

from shared.delivery import PermanentError, RetryPolicy
from shared.memory_bus import MemoryBus
from shared.messages import Envelope
from shared.messages import contracts as c
from tests.support.waiting import eventually


@pytest_asyncio.fixture
async def make_bus() -> AsyncIterator[Callable[[RetryPolicy], MemoryBus]]:
    buses: list[MemoryBus] = []

    def make(retry: RetryPolicy) -> MemoryBus:
        buses.append(MemoryBus(concurrency=2, retry=retry))
        return buses[-1]

    yield make
    for bus in buses:
        await bus.close()


def credits_reserved(order_id: str) -> Envelope:
    return Envelope.wrap(c.CreditsReserved(order_id=order_id, credits=5), correlation_id=order_id)


async def test_a_long_transient_failure_is_retried_with_growing_delays_and_applied_once(
    make_bus: Callable[[RetryPolicy], MemoryBus],
) -> None:
    bus = make_bus(RetryPolicy(backoff=(0.05, 0.1, 0.2), horizon=30.0))
    outage_ends = time.monotonic() + 1.2
    attempts: list[float] = []
    applied: list[str] = []

    async def handler(envelope: Envelope) -> None:
        attempts.append(time.monotonic())
        if time.monotonic() < outage_ends:
            raise ConnectionRefusedError("database unavailable")
        applied.append(envelope.id)

    await bus.subscribe(c.ORDERS, handler)
    sent = credits_reserved("o-outage")
    await bus.publish(sent)

    async def done() -> bool:
        return bool(applied)

    await eventually(done, within=10)
    await asyncio.sleep(0.3)
    assert applied == [sent.id]
    assert len(attempts) > 5  # more than the old delivery limit allowed
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] < 0.1 < gaps[-1]
    assert await bus.dead_letters(c.ORDERS) == []
    assert bus.parked() == 0


async def test_a_failure_past_the_horizon_is_dead_lettered_with_the_last_error(
    make_bus: Callable[[RetryPolicy], MemoryBus],
) -> None:
    bus = make_bus(RetryPolicy(backoff=(0.05, 0.1), horizon=0.5))
    attempts: list[str] = []

    async def handler(envelope: Envelope) -> None:
        attempts.append(envelope.id)
        raise ConnectionRefusedError(f"database unavailable (attempt {len(attempts)})")

    await bus.subscribe(c.ORDERS, handler)
    sent = credits_reserved("o-forever")
    await bus.publish(sent)

    async def dead() -> bool:
        return bool(await bus.dead_letters(c.ORDERS))

    await eventually(dead, within=5)
    [letter] = await bus.dead_letters(c.ORDERS)
    assert letter.message_id == sent.id
    assert letter.reason == (
        f"retry_horizon: ConnectionRefusedError: database unavailable (attempt {len(attempts)})"
    )
    assert len(attempts) > 3
    tried = len(attempts)
    await asyncio.sleep(0.3)
    assert len(attempts) == tried
    assert bus.parked() == 0


async def test_a_permanent_refusal_is_dead_lettered_at_once(
    make_bus: Callable[[RetryPolicy], MemoryBus],
) -> None:
    bus = make_bus(RetryPolicy(backoff=(0.05,), horizon=30.0))
    attempts: list[str] = []

    async def handler(envelope: Envelope) -> None:
        attempts.append(envelope.id)
        raise PermanentError("refund over the charge")

    await bus.subscribe(c.ORDERS, handler)
    await bus.publish(credits_reserved("o-refused"))

    async def dead() -> bool:
        return bool(await bus.dead_letters(c.ORDERS))

    await eventually(dead, within=5)
    [letter] = await bus.dead_letters(c.ORDERS)
    assert letter.reason == "PermanentError: refund over the charge"
    await asyncio.sleep(0.2)
    assert attempts == [letter.message_id]
    assert bus.parked() == 0


async def test_closing_the_bus_drops_no_timer_into_a_closed_loop(
    make_bus: Callable[[RetryPolicy], MemoryBus],
) -> None:
    bus = make_bus(RetryPolicy(backoff=(60.0,), horizon=3600.0))

    async def handler(envelope: Envelope) -> None:
        raise ConnectionRefusedError("database unavailable")

    await bus.subscribe(c.ORDERS, handler)
    await bus.publish(credits_reserved("o-parked"))

    async def parked() -> bool:
        return bus.parked() == 1

    await eventually(parked, within=5)
    await bus.close()
    assert bus.parked() == 0
