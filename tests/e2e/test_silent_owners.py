"""A step's owner silent past the saga's deadline, on the real stack (services as separate
processes, real PostgreSQL and RabbitMQ): the saga asks it and acts on its answer, never on the
silence alone. Provisioning down past every provisioning deadline must end with the goods
delivered or the money refunded, never both (issue 13, item 2)."""

from __future__ import annotations

import asyncio
import signal

import httpx

from devstack.stack import Stack
from tests.support.stack import (
    TERMINAL,
    Shopper,
    assert_messaging_settled,
    pay,
    rows,
    stack_fixture,
)

PROVISIONING_TIMEOUT = 3  # seconds; with two attempts the fence goes out about 6 s after paying

stack = stack_fixture(
    {
        "orders": {
            "ORDERS_PROVISIONING_TIMEOUT_SECONDS": str(PROVISIONING_TIMEOUT),
            "ORDERS_PROVISIONING_MAX_ATTEMPTS": "2",
            "ORDERS_STEP_TIMEOUT_SECONDS": "3",
            "ORDERS_DEADLINE_POLL_SECONDS": "0.5",
        },
    },
)


async def test_provisioning_down_past_its_deadlines_delivers_or_refunds_never_both(
    stack: Stack, sim: httpx.AsyncClient
) -> None:
    # Before: the last deadline refunded everything and sent CancelJob at once; provisioning,
    # back, ran the queued ProvisionOrder first and ignored the cancel: a server and a refund.
    shopper = Shopper(stack)
    order_id, _ = await shopper.checkout({"vps-small": 1}, use_credits=False)
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL)
    assert order["status"] == "awaiting_payment", order
    await asyncio.to_thread(stack.procs["provisioning"].stop, signal.SIGKILL)
    try:
        await pay(sim, order)
        order = await shopper.wait_for(order_id, {"provisioning"}, within=20)

        async def fenced() -> bool:
            found = await shopper.order(order_id)
            reasons = [h["reason"] or "" for h in (found or {}).get("history", [])]
            return any("asking provisioning to cancel" in r for r in reasons)

        deadline = asyncio.get_running_loop().time() + 30
        while not await fenced():
            assert asyncio.get_running_loop().time() < deadline, "no CancelJob was sent"
            await asyncio.sleep(0.5)
        # Silence alone refunds nothing: the order waits for provisioning's answer.
        await asyncio.sleep(PROVISIONING_TIMEOUT * 2)
        order = await shopper.order(order_id) or {}
        assert order["status"] == "provisioning", order
        assert await refunds(stack, order_id) == []
    finally:
        await asyncio.to_thread(stack.procs["provisioning"].start)
        await asyncio.to_thread(stack.wait_ready, "provisioning")

    order = await shopper.wait_for(order_id, TERMINAL, within=30)
    job = await rows(
        stack, "provisioning", "SELECT status FROM jobs WHERE order_id = :o", o=order_id
    )
    # The queued ProvisionOrder and the CancelJob lock the same job: whichever came first
    # decides, and the order says the same thing.
    if job == [{"status": "done"}]:
        assert order["status"] == "completed", order
        assert [line["result"] for line in order["lines"]] == ["delivered"]
        assert await refunds(stack, order_id) == []
    else:
        assert job == [{"status": "cancelled"}], job
        assert order["status"] == "refunded", order
        assert await refunds(stack, order_id) == [order["money_total"]]
    await assert_messaging_settled(stack, order_id)


async def refunds(stack: Stack, order_id: str) -> list[int]:
    found = await rows(
        stack, "payments", "SELECT amount FROM refunds WHERE order_id = :o", o=order_id
    )
    return [r["amount"] for r in found]
