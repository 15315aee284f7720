"""A lost order outcome no longer leaves the cart `checking_out` for good. The whole topology as
separate processes on the real PostgreSQL and RabbitMQ: the cart process is stopped while its
order runs, the order ends, its one `OrderCompleted` / `OrderCancelled` is taken out of the
cart's queue (as a purge, or dead-lettering past the retry horizon, would lose it), and the
cart is started again. Nothing will ever deliver that outcome; the cart's recovery round asks
orders (`InquireOrder`), and orders' answer finishes the checkout."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
import httpx

from devstack.stack import Stack
from shared.messages import Envelope
from shared.messages.contracts import InquireOrder, OrderCancelled, OrderCompleted
from shared.topology import Names
from tests.support.stack import TERMINAL, Shopper, cart_status_is, rows, stack_fixture
from tests.support.waiting import eventually

# Short enough that the test sees the round ask within seconds of the cart's restart.
stack = stack_fixture(
    {
        "cart": {
            "CART_OUTCOME_INQUIRY_AFTER_SECONDS": "1",
            "CART_OUTCOME_INQUIRY_POLL_SECONDS": "0.5",
        }
    }
)


async def order_running_while_cart_is_down(stack: Stack, name: str) -> tuple[Shopper, str, str]:
    """(shopper, order id, payment URL): a checkout paid by card whose order waits for the
    shopper to pay (it runs until the test acts), the cart process stopped meanwhile."""
    shopper = Shopper(stack, f"{name}-{uuid.uuid4().hex[:6]}")
    order_id, _ = await shopper.checkout({"vps-small": 1}, use_credits=False)
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL)
    assert order["status"] == "awaiting_payment", order
    await asyncio.to_thread(stack.procs["cart"].stop)
    return shopper, order_id, str(order["payment_url"])


async def start_cart(stack: Stack) -> None:
    await asyncio.to_thread(stack.procs["cart"].start)
    await asyncio.to_thread(stack.wait_ready, "cart")


async def lose_outcome(stack: Stack, order_id: str, outcome_type: str) -> None:
    """Waits for the order's outcome in the (stopped) cart's queue and drops whatever is there:
    that outcome only (an answer to a question the cart asked before it stopped may be there
    twice), so nothing else is lost."""
    connection = await aio_pika.connect(stack.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(Names(stack.namespace).queue("cart"), passive=True)
        taken: list[Envelope] = []

        async def drained() -> bool:
            while (message := await queue.get(fail=False)) is not None:
                taken.append(Envelope.model_validate_json(message.body))
                await message.ack()
            return bool(taken)

        await eventually(drained, within=15)
    assert {(e.type, e.correlation_id) for e in taken} == {(outcome_type, order_id)}


async def checkout_row(stack: Stack, order_id: str) -> dict[str, Any]:
    [row] = await rows(
        stack, "cart", "SELECT status, reason FROM checkouts WHERE id = :c", c=order_id
    )
    return row


async def sent(stack: Stack, service: str, order_id: str, message_type: str) -> int:
    """How many messages of this type `service` wrote to its outbox for the order."""
    [row] = await rows(
        stack,
        service,
        "SELECT count(*) AS n FROM outbox WHERE correlation_id = :c AND message_type = :t",
        c=order_id,
        t=message_type,
    )
    return int(row["n"])


async def test_a_completion_lost_while_the_cart_was_down_is_recovered_by_asking(
    stack: Stack,
) -> None:
    shopper, order_id, payment_url = await order_running_while_cart_is_down(stack, "lost-done")

    async with httpx.AsyncClient(timeout=10) as browser:
        paid = await browser.post(payment_url, data={"outcome": "pay"})
        assert paid.status_code == 303, paid.text
    assert (await shopper.wait_for(order_id, TERMINAL))["status"] == "completed"
    await lose_outcome(stack, order_id, OrderCompleted.TYPE)
    await start_cart(stack)

    await eventually(lambda: cart_status_is(stack, order_id, "checked_out"), within=30)
    assert await checkout_row(stack, order_id) == {"status": "completed", "reason": None}
    assert await sent(stack, "cart", order_id, InquireOrder.TYPE) >= 1
    # The saga's announcement (lost) and at least one answer to the cart's question.
    assert await sent(stack, "orders", order_id, OrderCompleted.TYPE) >= 2


async def test_a_cancellation_lost_while_the_cart_was_down_reopens_the_cart_by_asking(
    stack: Stack,
) -> None:
    shopper, order_id, _ = await order_running_while_cart_is_down(stack, "lost-cancel")

    cancelled = await shopper.cancel(order_id)
    assert cancelled.status_code == 200, cancelled.text
    assert (await shopper.wait_for(order_id, TERMINAL))["status"] == "cancelled"
    await lose_outcome(stack, order_id, OrderCancelled.TYPE)
    await start_cart(stack)

    await eventually(lambda: cart_status_is(stack, order_id, "open"), within=30)
    assert await checkout_row(stack, order_id) == {
        "status": "cancelled",
        "reason": "cancelled by the shopper",
    }
    assert await sent(stack, "cart", order_id, InquireOrder.TYPE) >= 1
    assert await sent(stack, "orders", order_id, OrderCancelled.TYPE) >= 2
