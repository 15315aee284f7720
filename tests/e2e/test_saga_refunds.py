"""Failure rows that involve Stripe and refunds, on the real stack with the Stripe simulator's
fault injection: a session that cannot be created, a payment that fails, items that cannot be
provisioned (their share refunded, the rest delivered), and a payment that arrives too late."""

from __future__ import annotations

from typing import Any

import httpx

from devstack.stack import Stack
from tests.support.stack import (
    TERMINAL,
    Shopper,
    assert_messaging_settled,
    balance,
    cart_status_is,
    failing_panel_overrides,
    grant,
    history,
    ledger,
    pay,
    rows,
    stack_fixture,
)
from tests.support.waiting import eventually

stack = stack_fixture(
    # The panel can build two vps-scarce servers, then the plan is sold out.
    failing_panel_overrides("vps-broken", "vps-broken-credits", capacity={"vps-scarce": 2}),
    catalogue={
        item_id: {
            "kind": "server_plan",
            "name": f"Server {item_id}",
            "unit_price": 2000,
            "currency": "EUR",
            "credit_price": credit_price,
            "units_per_item": 1,
        }
        for item_id, credit_price in (
            ("vps-broken", None),
            ("vps-broken-credits", 150),
            ("vps-scarce", None),
        )
    },
)


async def refunds(stack: Stack, order_id: str) -> list[dict[str, Any]]:
    return await rows(
        stack,
        "payments",
        "SELECT amount, status FROM refunds WHERE order_id = :o ORDER BY created_at",
        o=order_id,
    )


async def test_a_payment_session_stripe_keeps_refusing_compensates(
    stack: Stack, sim: httpx.AsyncClient
) -> None:
    shopper = Shopper(stack)
    await grant(stack, shopper.user_id, 1000)
    faults = {
        "api_errors": [
            {"method": "POST", "path_prefix": "/v1/checkout/sessions", "count": 50, "status": 500}
        ]
    }
    assert (await sim.post("/_sim/faults", json=faults)).status_code == 200
    order_id, _ = await shopper.checkout({"pkg-10": 1, "credits-100": 1}, use_credits=True)
    order = await shopper.wait_for(order_id, TERMINAL, within=40)

    assert order["status"] == "cancelled", order
    assert order["status_reason"].startswith("payment session failed")
    assert await ledger(stack, order_id) == [("reserve", 400), ("release", 400)]
    assert await balance(stack, shopper.user_id) == {"available": 1000, "reserved": 0}
    jobs = await rows(
        stack, "provisioning", "SELECT status FROM jobs WHERE order_id = :o", o=order_id
    )
    assert jobs == [{"status": "cancelled"}]
    assert (
        await rows(
            stack, "payments", "SELECT 1 FROM payment_sessions WHERE order_id = :o", o=order_id
        )
        == []
    )
    injected = (await sim.get("/_sim/faults")).json()
    assert injected["counters"]["api_errors"] >= 2  # retried, bounded, then gave up


async def test_a_failed_delayed_payment_compensates(stack: Stack, sim: httpx.AsyncClient) -> None:
    shopper = Shopper(stack)
    order_id, _ = await shopper.checkout({"vps-small": 1}, use_credits=False)
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL)
    await pay(sim, order, payment_method="delayed")
    # The bank debit is on its way: the order shows it (issue 14, item 1).
    await shopper.wait_for(order_id, {"payment_processing"})
    session_id = order["payment_url"].rsplit("/", 1)[-1]
    response = await sim.post(
        f"/_sim/sessions/{session_id}/async_result", json={"outcome": "failed"}
    )
    assert response.status_code == 200, response.text
    order = await shopper.wait_for(order_id, TERMINAL)

    assert order["status"] == "cancelled", order
    assert history(order) == [
        "pending",
        "awaiting_payment",
        "payment_processing",
        "compensating",
        "cancelled",
    ]
    jobs = await rows(
        stack, "provisioning", "SELECT status FROM jobs WHERE order_id = :o", o=order_id
    )
    assert jobs == [{"status": "cancelled"}]
    assert await refunds(stack, order_id) == []  # nothing was charged


async def test_items_that_cannot_be_provisioned_are_refunded_and_the_rest_delivered(
    stack: Stack, sim: httpx.AsyncClient
) -> None:
    shopper = Shopper(stack)
    await grant(stack, shopper.user_id, 1000)
    # Credits: pkg-10 (400) and vps-broken-credits (150); card: vps-broken (2000) + credits-100 (1000).
    order_id, _ = await shopper.checkout(
        {"pkg-10": 1, "vps-broken-credits": 1, "vps-broken": 1, "credits-100": 1}, use_credits=True
    )
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL)
    assert order["money_total"] == 3000 and order["credits_total"] == 550
    await pay(sim, order)
    order = await shopper.wait_for(order_id, TERMINAL)

    assert order["status"] == "partially_completed", order
    results = {line["item_id"]: line["result"] for line in order["lines"]}
    assert results == {
        "pkg-10": "delivered",
        "vps-broken-credits": "failed",
        "vps-broken": "failed",
        "credits-100": "delivered",
    }

    # Exactly the failed lines' share comes back: 2000 by Stripe refund, 150 credits by ledger.
    async def refund_settled() -> bool:
        return await refunds(stack, order_id) == [{"amount": 2000, "status": "succeeded"}]

    await eventually(refund_settled, within=15)
    assert await ledger(stack, order_id) == [
        ("reserve", 550),
        ("capture", 550),
        ("grant", 100),
        ("refund", 150),
    ]
    assert await balance(stack, shopper.user_id) == {
        "available": 1000 - 550 + 100 + 150,
        "reserved": 0,
    }
    await eventually(lambda: cart_status_is(stack, order_id, "checked_out"), within=10)
    await assert_messaging_settled(stack, order_id)


async def test_three_servers_of_which_the_panel_builds_two_refund_exactly_one(
    stack: Stack, sim: httpx.AsyncClient
) -> None:
    shopper = Shopper(stack)
    order_id, _ = await shopper.checkout({"vps-scarce": 3}, use_credits=False)
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL)
    assert order["money_total"] == 6000
    await pay(sim, order)
    order = await shopper.wait_for(order_id, TERMINAL)

    assert order["status"] == "partially_completed", order
    [line] = order["lines"]
    assert line["result"] == "partially_delivered"

    async def refund_settled() -> bool:
        return await refunds(stack, order_id) == [{"amount": 2000, "status": "succeeded"}]

    await eventually(refund_settled, within=15)
    units = await rows(
        stack,
        "provisioning",
        "SELECT u.unit_no, u.status FROM job_units u JOIN jobs j ON j.id = u.job_id"
        " WHERE j.order_id = :o ORDER BY u.unit_no",
        o=order_id,
    )
    assert [(u["unit_no"], u["status"]) for u in units] == [
        (1, "delivered"),
        (2, "delivered"),
        (3, "failed"),
    ]
    await eventually(lambda: cart_status_is(stack, order_id, "checked_out"), within=10)
    await assert_messaging_settled(stack, order_id)


async def test_when_nothing_can_be_provisioned_the_whole_payment_is_refunded(
    stack: Stack, sim: httpx.AsyncClient
) -> None:
    shopper = Shopper(stack)
    order_id, _ = await shopper.checkout({"vps-broken": 1}, use_credits=False)
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL)
    await pay(sim, order)
    order = await shopper.wait_for(order_id, TERMINAL)

    assert order["status"] == "refunded", order

    async def refund_settled() -> bool:
        return await refunds(stack, order_id) == [{"amount": 2000, "status": "succeeded"}]

    await eventually(refund_settled, within=15)
    await eventually(lambda: cart_status_is(stack, order_id, "open"), within=10)


async def test_a_payment_that_lands_after_the_shopper_cancelled_is_refunded(
    stack: Stack, sim: httpx.AsyncClient
) -> None:
    shopper = Shopper(stack)
    order_id, _ = await shopper.checkout({"vps-small": 1}, use_credits=False)
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL)
    # The shopper pays, but Stripe's webhook is slow; meanwhile they cancel the order.
    assert (
        await sim.post("/_sim/faults", json={"webhooks": {"delay_seconds": 3}})
    ).status_code == 200
    await pay(sim, order)
    assert (await shopper.cancel(order_id)).status_code == 200
    order = await shopper.wait_for(order_id, {"refunded"}, within=30)

    assert "payment arrived after the order was cancelled" in " ".join(
        h["reason"] for h in order["history"]
    )

    async def refund_settled() -> bool:
        return await refunds(stack, order_id) == [{"amount": 1500, "status": "succeeded"}]

    await eventually(refund_settled, within=15)
    jobs = await rows(
        stack, "provisioning", "SELECT status FROM jobs WHERE order_id = :o", o=order_id
    )
    assert jobs == [{"status": "cancelled"}]


async def test_a_payment_of_another_amount_is_refunded_and_nothing_is_delivered(
    stack: Stack, sim: httpx.AsyncClient
) -> None:
    shopper = Shopper(stack)
    await grant(stack, shopper.user_id, 1000)
    # Credits: pkg-10 (400); card: credits-100 (1000).
    order_id, _ = await shopper.checkout({"pkg-10": 1, "credits-100": 1}, use_credits=True)
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL)
    assert order["money_total"] == 1000
    # Stripe reports a different total paid (a promotion code on the hosted page, a tampered
    # integration): 1 cent for a 10 EUR order.
    await pay(sim, order, amount_total=1)
    order = await shopper.wait_for(order_id, TERMINAL, within=30)

    assert order["status"] == "refunded", order
    assert "amount_mismatch: paid 1 EUR, expected 1000 EUR" in [
        h["reason"] for h in order["history"]
    ]
    assert "provisioning" not in history(order) and "completed" not in history(order)

    async def refund_settled() -> bool:
        return await refunds(stack, order_id) == [{"amount": 1, "status": "succeeded"}]

    await eventually(refund_settled, within=15)
    assert await ledger(stack, order_id) == [("reserve", 400), ("release", 400)]
    assert await balance(stack, shopper.user_id) == {"available": 1000, "reserved": 0}
    jobs = await rows(
        stack, "provisioning", "SELECT status FROM jobs WHERE order_id = :o", o=order_id
    )
    assert jobs == [{"status": "cancelled"}]
    await eventually(lambda: cart_status_is(stack, order_id, "open"), within=10)
    await assert_messaging_settled(stack, order_id)
