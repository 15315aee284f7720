"""The happy path end to end: the four services as separate processes on the real RabbitMQ and
PostgreSQL, the Stripe simulator behind the official SDK, driven over HTTP like a shopper.

After each checkout the test reads every service's own tables, not just the API."""

from __future__ import annotations

import time
import uuid

import httpx

from devstack.stack import Stack
from tests.support.stack import (
    TERMINAL,
    Shopper,
    assert_messaging_settled,
    cart_status_is,
    grant,
    rows,
    stack_fixture,
)
from tests.support.waiting import eventually

START_CREDITS = 1000


stack = stack_fixture()


async def test_credit_only_checkout_completes_and_every_service_agrees(stack: Stack) -> None:
    shopper = Shopper(stack, f"alice-{uuid.uuid4().hex[:6]}")
    await grant(stack, shopper.user_id, START_CREDITS)

    order_id, started = await shopper.checkout({"pkg-10": 1, "vps-small": 1}, use_credits=True)
    order = await shopper.wait_for(order_id, TERMINAL)
    elapsed = time.monotonic() - started
    print(f"credit-only checkout took {elapsed * 1000:.0f} ms to complete")

    assert order["status"] == "completed", order
    assert [h["status"] for h in order["history"]] == [
        "pending",
        "paid",
        "provisioning",
        "completed",
    ]
    assert order["credits_total"] == 400 + 120 and order["money_total"] == 0

    # orders
    saga = await rows(
        stack, "orders", "SELECT step, version FROM saga_instances WHERE id = :i", i=order_id
    )
    assert saga == [{"step": "done", "version": saga[0]["version"]}] and saga[0]["version"] >= 5
    # payments: reserve and capture, balance lowered by exactly the order's credits
    entries = await rows(
        stack,
        "payments",
        "SELECT kind, amount, trace_id FROM ledger_entries WHERE order_id = :o ORDER BY id",
        o=order_id,
    )
    assert [(e["kind"], e["amount"]) for e in entries] == [("reserve", 520), ("capture", 520)]
    assert {e["trace_id"] for e in entries} == {order_id}
    account = await rows(
        stack,
        "payments",
        "SELECT available, reserved FROM credit_accounts WHERE user_id = :u",
        u=shopper.user_id,
    )
    assert account == [{"available": START_CREDITS - 520, "reserved": 0}]
    # provisioning: the job exists and is done; the sessions were granted
    jobs = await rows(
        stack,
        "provisioning",
        "SELECT id, status, user_id FROM jobs WHERE order_id = :o",
        o=order_id,
    )
    assert len(jobs) == 1 and jobs[0]["status"] == "done" and jobs[0]["user_id"] == shopper.user_id
    assert order["job_id"] == str(jobs[0]["id"])
    sessions = await rows(
        stack,
        "provisioning",
        "SELECT sum(sessions) AS n FROM entitlements WHERE order_id = :o",
        o=order_id,
    )
    assert sessions == [{"n": 10}]
    items = await rows(
        stack, "provisioning", "SELECT status FROM job_items WHERE job_id = :j", j=jobs[0]["id"]
    )
    assert sorted(i["status"] for i in items) == ["delivered", "delivered"]
    # cart: checked out
    await eventually(lambda: cart_status_is(stack, order_id, "checked_out"), within=10)
    await assert_messaging_settled(stack, order_id)


async def test_card_checkout_pays_through_stripe_checkout_and_completes(stack: Stack) -> None:
    shopper = Shopper(stack, f"bob-{uuid.uuid4().hex[:6]}")

    order_id, started = await shopper.checkout(
        {"credits-100": 1, "vps-small": 1}, use_credits=False
    )
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL)
    assert order["status"] == "awaiting_payment", order
    assert order["payment_url"] and "/pay/" in order["payment_url"]

    # The shopper presses "pay" on the (simulated) Stripe-hosted page.
    async with httpx.AsyncClient(timeout=10) as browser:
        response = await browser.post(order["payment_url"], data={"outcome": "pay"})
        # Like Stripe's hosted page, the simulator redirects the shopper to success_url.
        assert response.status_code == 303, response.text
        session_id = order["payment_url"].rsplit("/", 1)[-1]
        assert response.headers["location"].endswith(f"order={order_id}&session={session_id}")
    order = await shopper.wait_for(order_id, TERMINAL)
    elapsed = time.monotonic() - started
    print(
        f"card checkout took {elapsed * 1000:.0f} ms to complete (including the simulated payment)"
    )

    assert order["status"] == "completed", order
    assert [h["status"] for h in order["history"]] == [
        "pending",
        "awaiting_payment",
        "paid",
        "provisioning",
        "completed",
    ]
    assert order["money_total"] == 1000 + 1500

    sessions = await rows(
        stack,
        "payments",
        "SELECT session_id, status, amount_total, payment_intent_id FROM payment_sessions WHERE order_id = :o",
        o=order_id,
    )
    assert len(sessions) == 1
    assert sessions[0]["status"] == "complete" and sessions[0]["amount_total"] == 2500
    assert sessions[0]["payment_intent_id"]
    events = await rows(
        stack, "payments", "SELECT type FROM stripe_events WHERE payload LIKE :p", p=f"%{order_id}%"
    )
    assert [e["type"] for e in events] == ["checkout.session.completed"]
    # No credits were reserved for a card-only order; the credit pack granted 100 credits.
    entries = await rows(
        stack,
        "payments",
        "SELECT kind, amount FROM ledger_entries WHERE order_id = :o ORDER BY id",
        o=order_id,
    )
    assert [(e["kind"], e["amount"]) for e in entries] == [("grant", 100)]
    account = await rows(
        stack,
        "payments",
        "SELECT available, reserved FROM credit_accounts WHERE user_id = :u",
        u=shopper.user_id,
    )
    assert account == [{"available": 100, "reserved": 0}]
    jobs = await rows(
        stack, "provisioning", "SELECT status FROM jobs WHERE order_id = :o", o=order_id
    )
    assert jobs == [{"status": "done"}]
    await eventually(lambda: cart_status_is(stack, order_id, "checked_out"), within=10)
    await assert_messaging_settled(stack, order_id)
