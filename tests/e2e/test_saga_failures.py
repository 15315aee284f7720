"""Each failure row of the saga on the real stack (services as separate processes, real
PostgreSQL and RabbitMQ): the order ends where it must, and every service's own tables agree —
credits back where they were, the job cancelled, no payment left open."""

from __future__ import annotations

import asyncio
import signal

import httpx

from devstack.stack import Stack
from tests.support.stack import (
    TERMINAL,
    Shopper,
    assert_messaging_settled,
    balance,
    cart_status_is,
    grant,
    history,
    ledger,
    rows,
    stack_fixture,
)
from tests.support.waiting import eventually

STEP_TIMEOUT = 4  # seconds; short so the deadline tests run quickly


stack = stack_fixture(
    {
        "orders": {
            "ORDERS_STEP_TIMEOUT_SECONDS": str(STEP_TIMEOUT),
            "ORDERS_DEADLINE_POLL_SECONDS": "0.5",
        },
        "panel_sim": {"PANEL_SIM_FAIL_PLANS": "vps-broken"},
    },
    catalogue={
        # A session package with no sessions in it: provisioning rejects such a job outright.
        "pkg-empty": {
            "kind": "session_package",
            "name": "Empty package",
            "unit_price": 100,
            "currency": "EUR",
            "credit_price": 50,
            "units_per_item": 0,
        }
    },
)


async def job_status(stack: Stack, order_id: str) -> str | None:
    found = await rows(
        stack, "provisioning", "SELECT status FROM jobs WHERE order_id = :o", o=order_id
    )
    return found[0]["status"] if found else None


async def test_insufficient_credits_cancels_with_a_clear_reason_and_touches_nothing(
    stack: Stack,
) -> None:
    shopper = Shopper(stack)
    await grant(stack, shopper.user_id, 100)
    order_id, _ = await shopper.checkout({"pkg-10": 1}, use_credits=True)  # 400 credits
    order = await shopper.wait_for(order_id, TERMINAL)

    assert order["status"] == "cancelled"
    assert order["status_reason"] == "insufficient_credits: 400 credits needed, 100 available"
    assert history(order) == ["pending", "cancelled"]
    assert await ledger(stack, order_id) == []
    assert await balance(stack, shopper.user_id) == {"available": 100, "reserved": 0}
    assert await job_status(stack, order_id) is None
    await eventually(lambda: cart_status_is(stack, order_id, "open"), within=10)
    await assert_messaging_settled(stack, order_id, consumers=("orders", "payments"))


async def test_a_job_that_cannot_be_created_releases_credits_and_no_payment_is_started(
    stack: Stack,
) -> None:
    shopper = Shopper(stack)
    await grant(stack, shopper.user_id, 500)
    order_id, _ = await shopper.checkout({"pkg-empty": 1, "credits-100": 1}, use_credits=True)
    order = await shopper.wait_for(order_id, TERMINAL)

    assert order["status"] == "cancelled", order
    assert order["status_reason"].startswith("job rejected:")
    assert history(order) == ["pending", "compensating", "cancelled"]
    assert await ledger(stack, order_id) == [("reserve", 50), ("release", 50)]
    assert await balance(stack, shopper.user_id) == {"available": 500, "reserved": 0}
    assert await job_status(stack, order_id) is None
    sessions = await rows(
        stack, "payments", "SELECT 1 FROM payment_sessions WHERE order_id = :o", o=order_id
    )
    assert sessions == []  # the money line never got a payment session
    await eventually(lambda: cart_status_is(stack, order_id, "open"), within=10)


async def test_an_expired_payment_session_cancels_the_job_and_releases_the_credits(
    stack: Stack,
) -> None:
    shopper = Shopper(stack)
    await grant(stack, shopper.user_id, 1000)
    # pkg-10 is paid with credits, the credit pack (no credit price) by card.
    order_id, _ = await shopper.checkout({"pkg-10": 1, "credits-100": 1}, use_credits=True)
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL)
    assert order["status"] == "awaiting_payment"
    session_id = order["payment_url"].rsplit("/", 1)[-1]

    async with httpx.AsyncClient(timeout=10) as http:
        expired = await http.post(
            stack.url("stripe_sim") + f"/_sim/sessions/{session_id}/expire_now"
        )
        assert expired.status_code == 200, expired.text
    order = await shopper.wait_for(order_id, TERMINAL)

    assert order["status"] == "cancelled", order
    assert history(order) == ["pending", "awaiting_payment", "compensating", "cancelled"]
    assert await ledger(stack, order_id) == [("reserve", 400), ("release", 400)]
    assert await balance(stack, shopper.user_id) == {"available": 1000, "reserved": 0}
    assert await job_status(stack, order_id) == "cancelled"
    session = await rows(
        stack, "payments", "SELECT status FROM payment_sessions WHERE order_id = :o", o=order_id
    )
    assert session == [{"status": "expired"}]
    await eventually(lambda: cart_status_is(stack, order_id, "open"), within=10)
    await assert_messaging_settled(stack, order_id)


async def test_the_shopper_cancelling_before_paying_undoes_everything_and_closes_the_session(
    stack: Stack,
) -> None:
    shopper = Shopper(stack)
    await grant(stack, shopper.user_id, 1000)
    order_id, _ = await shopper.checkout({"pkg-10": 1, "credits-100": 1}, use_credits=True)
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL)
    assert order["status"] == "awaiting_payment"

    response = await shopper.cancel(order_id)
    assert response.status_code == 200, response.text
    order = await shopper.wait_for(order_id, TERMINAL)

    assert order["status"] == "cancelled"
    assert order["status_reason"] == "cancelled by the shopper"
    assert await ledger(stack, order_id) == [("reserve", 400), ("release", 400)]
    assert await balance(stack, shopper.user_id) == {"available": 1000, "reserved": 0}
    assert await job_status(stack, order_id) == "cancelled"

    async def session_expired() -> bool:
        found = await rows(
            stack, "payments", "SELECT status FROM payment_sessions WHERE order_id = :o", o=order_id
        )
        return found == [{"status": "expired"}]

    await eventually(session_expired, within=10)  # nobody can pay into a cancelled order
    # Cancelling again, or someone else cancelling, is refused with a reason.
    again = await shopper.cancel(order_id)
    assert again.status_code == 409 and again.json()["code"] == "order_not_cancellable"
    stranger = await Shopper(stack).cancel(order_id)
    assert stranger.status_code == 404


async def test_a_completed_order_cannot_be_cancelled(stack: Stack) -> None:
    shopper = Shopper(stack)
    await grant(stack, shopper.user_id, 1000)
    order_id, _ = await shopper.checkout({"pkg-10": 1}, use_credits=True)
    assert (await shopper.wait_for(order_id, TERMINAL))["status"] == "completed"
    response = await shopper.cancel(order_id)
    assert response.status_code == 409
    assert response.json()["code"] == "order_not_cancellable"


async def test_a_step_deadline_fires_even_after_orders_restarts_and_the_saga_compensates(
    stack: Stack,
) -> None:
    shopper = Shopper(stack)
    await grant(stack, shopper.user_id, 1000)
    # Provisioning is down: CreateJob waits in its queue and no JobCreated comes back.
    await asyncio.to_thread(stack.procs["provisioning"].stop, signal.SIGKILL)
    try:
        order_id, _ = await shopper.checkout({"pkg-10": 1}, use_credits=True)
        order = await shopper.wait_for(order_id, {"pending"}, within=10)

        async def reserved() -> bool:
            return await ledger(stack, order_id) == [("reserve", 400)]

        await eventually(reserved, within=10)
        # Orders is killed and restarted before the deadline; the deadline lives in its database.
        await asyncio.to_thread(stack.restart, "orders")
        order = await shopper.wait_for(order_id, {"compensating"}, within=STEP_TIMEOUT + 10)
        assert order["status_reason"] == "creating_job timed out"
        # Credits come back at once; the job's cancellation waits for provisioning to return.
        await eventually(lambda: _balance_is(stack, shopper.user_id, 1000), within=10)
    finally:
        await asyncio.to_thread(stack.procs["provisioning"].start)
        await asyncio.to_thread(stack.wait_ready, "provisioning")

    order = await shopper.wait_for(order_id, TERMINAL, within=20)
    assert order["status"] == "cancelled", order
    assert history(order) == ["pending", "compensating", "cancelled"]
    # CreateJob was applied when provisioning came back, then cancelled: no live job is left.
    assert await job_status(stack, order_id) == "cancelled"
    assert await ledger(stack, order_id) == [("reserve", 400), ("release", 400)]
    await assert_messaging_settled(stack, order_id)


async def _balance_is(stack: Stack, user_id: str, available: int) -> bool:
    return await balance(stack, user_id) == {"available": available, "reserved": 0}
