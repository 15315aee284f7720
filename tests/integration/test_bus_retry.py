"""Transient failures on the real RabbitMQ: parked in the service's delayed-retry queues and
redelivered with growing delays until applied, dead-lettered only past the retry horizon; a
permanent refusal still dead-letters at once. Backoffs are shortened, the shapes are the real ones."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Callable

import pytest_asyncio

from devstack.stack import delete_broker_namespace
from shared.bus import RabbitBus
from shared.delivery import PermanentError, RetryPolicy
from shared.messages import Envelope
from shared.messages import contracts as c
from tests.support.waiting import eventually

# The broker's own guard against a crash loop, at its production default. Every park in a retry
# queue makes the message a new delivery, so it does not cap how often a handler may fail.
DELIVERY_LIMIT = 5


@pytest_asyncio.fixture(loop_scope="session")
async def make_bus(rabbitmq_url: str) -> AsyncIterator[Callable[[RetryPolicy], RabbitBus]]:
    buses: list[RabbitBus] = []

    def make(retry: RetryPolicy) -> RabbitBus:
        bus = RabbitBus(
            rabbitmq_url,
            namespace=f"test-retry-{secrets.token_hex(4)}",
            prefetch=8,
            delivery_limit=DELIVERY_LIMIT,
            retry=retry,
        )
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.close()
        await delete_broker_namespace(rabbitmq_url, bus.names, retry_backoff=bus.retry.backoff)


def credits_reserved(order_id: str) -> Envelope:
    return Envelope.wrap(c.CreditsReserved(order_id=order_id, credits=5), correlation_id=order_id)


async def test_a_failure_longer_than_the_delivery_limit_allows_waits_and_is_applied_once(
    make_bus: Callable[[RetryPolicy], RabbitBus],
) -> None:
    bus = make_bus(RetryPolicy(backoff=(0.25, 0.5, 1.0), horizon=120.0))
    await bus.start()
    outage_ends = time.monotonic() + 9.0  # a database failover, three times the old ~3 s budget
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

    await eventually(done, within=30)
    assert applied == [sent.id]
    assert len(attempts) > DELIVERY_LIMIT + 1
    # The delays grow up to the cap: later gaps are longer than the first one.
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert max(gaps) > 2 * gaps[0]
    assert await bus.dead_letters(c.ORDERS) == []


async def test_a_failure_past_the_retry_horizon_is_dead_lettered_with_the_last_error(
    make_bus: Callable[[RetryPolicy], RabbitBus],
) -> None:
    bus = make_bus(RetryPolicy(backoff=(0.2, 0.4), horizon=2.0))
    await bus.start()
    attempts: list[str] = []

    async def handler(envelope: Envelope) -> None:
        attempts.append(envelope.id)
        raise ConnectionRefusedError("database unavailable")

    await bus.subscribe(c.ORDERS, handler)
    sent = credits_reserved("o-forever")
    await bus.publish(sent)

    async def dead() -> bool:
        return bool(await bus.dead_letters(c.ORDERS))

    await eventually(dead, within=20)
    [letter] = await bus.dead_letters(c.ORDERS)
    assert letter.message_id == sent.id
    assert letter.reason == "retry_horizon: ConnectionRefusedError: database unavailable"
    assert len(attempts) > 3  # retried for the whole horizon, not dead-lettered early
    tried = len(attempts)
    await _quiet(1.0)
    assert len(attempts) == tried  # and then no longer delivered


async def test_a_permanent_refusal_is_dead_lettered_at_once(
    make_bus: Callable[[RetryPolicy], RabbitBus],
) -> None:
    bus = make_bus(RetryPolicy(backoff=(0.2,), horizon=60.0))
    await bus.start()
    attempts: list[str] = []

    async def handler(envelope: Envelope) -> None:
        attempts.append(envelope.id)
        raise PermanentError("refund over the charge")

    await bus.subscribe(c.ORDERS, handler)
    await bus.publish(credits_reserved("o-refused"))

    async def dead() -> bool:
        return bool(await bus.dead_letters(c.ORDERS))

    await eventually(dead, within=10)
    [letter] = await bus.dead_letters(c.ORDERS)
    assert letter.reason == "PermanentError: refund over the charge"
    await _quiet(0.5)
    assert len(attempts) == 1


async def _quiet(seconds: float) -> None:
    await asyncio.sleep(seconds)
