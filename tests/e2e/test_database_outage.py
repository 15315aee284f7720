"""A service's database refusing connections for longer than a few seconds, on the real stack
(services as separate processes, real PostgreSQL and RabbitMQ): messages wait in the delayed-retry
queues and are applied once it is back; nothing is dead-lettered, nothing is lost (issue 13,
item 1)."""

from __future__ import annotations

import asyncio

import httpx

from devstack.infra import database_closed
from devstack.stack import Stack
from shared.bus import RabbitBus
from tests.support.stack import (
    TERMINAL,
    Shopper,
    assert_messaging_settled,
    pay,
    rows,
    stack_fixture,
)

OUTAGE_SECONDS = 15  # the retry budget before the delayed-retry queues was about 3 s in all

stack = stack_fixture()


async def test_a_payment_completing_while_the_orders_database_is_closed_is_applied_after(
    stack: Stack, sim: httpx.AsyncClient, bus: RabbitBus, postgres_admin_url: str
) -> None:
    # Before: PaymentSucceeded was retried ~3 s, dead-lettered, never announced again, and the
    # payment deadline cancelled the order with the charge kept.
    shopper = Shopper(stack)
    order_id, _ = await shopper.checkout({"vps-small": 1}, use_credits=False)
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL)
    assert order["status"] == "awaiting_payment", order
    database = stack.database_urls["orders"].rsplit("/", 1)[-1]
    async with database_closed(postgres_admin_url, database):
        await pay(sim, order)

        async def payment_recorded() -> bool:
            found = await rows(
                stack,
                "payments",
                "SELECT status FROM payment_sessions WHERE order_id = :o",
                o=order_id,
            )
            return found == [{"status": "complete"}]

        deadline = asyncio.get_running_loop().time() + 10
        while not await payment_recorded():
            assert asyncio.get_running_loop().time() < deadline, "payment never recorded"
            await asyncio.sleep(0.2)
        await asyncio.sleep(OUTAGE_SECONDS)

    order = await shopper.wait_for(order_id, TERMINAL, within=60)
    assert order["status"] == "completed", order
    assert [d for d in await bus.dead_letters("orders") if order_id in d.body.decode()] == []
    await assert_messaging_settled(stack, order_id)
