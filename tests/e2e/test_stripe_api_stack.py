"""Calls from payments to Stripe on the real stack (services as separate processes, PostgreSQL,
RabbitMQ, the Stripe simulator): a Stripe that answers 5xx or times out after acting still ends
with exactly one Checkout Session, and refunds through RefundPayment are made once, never exceed
what was paid — also when several arrive at once — and are followed until Stripe settles them."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from devstack.stack import Stack
from shared.bus import RabbitBus
from shared.messages import Envelope
from shared.messages.contracts import RefundFailed, RefundPayment
from tests.support.stack import (
    TERMINAL,
    Shopper,
    rows,
    sessions_at_stripe,
    set_faults,
    stack_fixture,
)
from tests.support.waiting import eventually

PAYMENTS_ENV = {
    # Our Stripe client gives up after 1.5 s; the simulator's held answers take longer.
    "PAYMENTS_STRIPE_TIMEOUT_SECONDS": "1.5",
    "PAYMENTS_STRIPE_RETRY_BASE_SECONDS": "0.1",
    "PAYMENTS_STRIPE_RETRY_CAP_SECONDS": "0.3",
    "PAYMENTS_RECONCILE_INTERVAL_SECONDS": "3600",
}


stack = stack_fixture({"payments": PAYMENTS_ENV})


async def counters(sim: httpx.AsyncClient) -> dict[str, int]:
    return dict((await sim.get("/_sim/faults")).json()["counters"])


async def session_rows(stack: Stack, order_id: str) -> list[dict[str, Any]]:
    return await rows(
        stack,
        "payments",
        "SELECT session_id, status, amount_total, amount_refunded, payment_intent_id "
        "FROM payment_sessions WHERE order_id = :o",
        o=order_id,
    )


async def awaiting_payment(stack: Stack) -> tuple[Shopper, str, dict[str, Any]]:
    shopper = Shopper(stack)
    order_id, _ = await shopper.checkout({"vps-small": 1}, use_credits=False)  # 1500 EUR cents
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL, within=30)
    assert order["status"] == "awaiting_payment", order
    return shopper, order_id, order


async def test_stripe_answering_500_twice_still_gives_one_session(
    stack: Stack, sim: httpx.AsyncClient
) -> None:
    await set_faults(
        sim,
        api_errors=[
            {"method": "POST", "path_prefix": "/v1/checkout/sessions", "count": 2, "status": 500}
        ],
    )

    _, order_id, order = await awaiting_payment(stack)

    [at_stripe] = await sessions_at_stripe(sim, order_id)
    [row] = await session_rows(stack, order_id)
    assert row["session_id"] == at_stripe["id"] == order["payment_url"].rsplit("/", 1)[-1]
    assert (await counters(sim))["api_errors"] == 2


async def test_a_create_that_timed_out_after_stripe_acted_gives_one_session(
    stack: Stack, sim: httpx.AsyncClient
) -> None:
    await set_faults(
        sim,
        timeout_after_commit=[
            {
                "method": "POST",
                "path_prefix": "/v1/checkout/sessions",
                "count": 1,
                "delay_seconds": 5,
            }
        ],
    )

    _, order_id, order = await awaiting_payment(stack)

    [at_stripe] = await sessions_at_stripe(sim, order_id)
    [row] = await session_rows(stack, order_id)
    assert row["session_id"] == at_stripe["id"] == order["payment_url"].rsplit("/", 1)[-1]
    assert (await counters(sim))["timeout_after_commit"] == 1
    log = stack.procs["payments"].log_path.read_text()
    assert f"stripe create_session for {order_id} failed (attempt 1), retrying" in log


async def test_a_partial_refund_is_made_once_and_followed_until_stripe_settles_it(
    stack: Stack, sim: httpx.AsyncClient, bus: RabbitBus
) -> None:
    _, order_id, _ = await completed_card_order(stack, sim)
    command = RefundPayment(order_id=order_id, refund_key="ops-partial", amount=600, reason="t")

    # Sent twice, as a saga retrying after a deadline would.
    for _ in range(2):
        await bus.publish(Envelope.wrap(command, correlation_id=order_id))

    await eventually(lambda: refunds_are(stack, order_id, [(600, "succeeded")]), within=20)
    [refund] = await rows(
        stack,
        "payments",
        "SELECT stripe_refund_id FROM refunds WHERE order_id = :o",
        o=order_id,
    )
    at_stripe = (await sim.get(f"/v1/refunds/{refund['stripe_refund_id']}")).json()
    assert (at_stripe["amount"], at_stripe["status"]) == (600, "succeeded")
    assert at_stripe["metadata"]["refund_key"] == "ops-partial"
    [session] = await session_rows(stack, order_id)
    assert at_stripe["payment_intent"] == session["payment_intent_id"]
    assert session["amount_refunded"] == 600

    async def replied_twice() -> bool:
        return await replies(stack, order_id) == 2

    await eventually(replied_twice, within=10)  # one refund, the answer given to both


async def test_concurrent_refunds_of_one_order_never_exceed_the_payment(
    stack: Stack, sim: httpx.AsyncClient, bus: RabbitBus
) -> None:
    _, order_id, _ = await completed_card_order(stack, sim)  # 1500 paid

    # Three refunds of 600 arrive at once: two fit, the third would exceed the payment.
    await asyncio.gather(
        *(
            bus.publish(
                Envelope.wrap(
                    RefundPayment(order_id=order_id, refund_key=key, amount=600, reason="t"),
                    correlation_id=order_id,
                )
            )
            for key in ("k1", "k2", "k3")
        )
    )

    async def two_refunded_one_refused() -> bool:
        found = await rows(
            stack,
            "payments",
            "SELECT amount, status FROM refunds WHERE order_id = :o ORDER BY status",
            o=order_id,
        )
        statuses = [(r["amount"], r["status"]) for r in found]
        return statuses == [(600, "rejected"), (600, "succeeded"), (600, "succeeded")]

    await eventually(two_refunded_one_refused, within=30)
    # The one that does not fit is answered (RefundFailed, rejected, with what is left), not
    # dead-lettered: a dead letter left the saga resending it at its deadline.
    [failed] = await rows(
        stack,
        "payments",
        "SELECT body FROM outbox WHERE message_type = :t AND correlation_id = :o",
        t=RefundFailed.TYPE,
        o=order_id,
    )
    answer = Envelope.model_validate_json(failed["body"]).payload
    assert (answer["amount"], answer["status"]) == (600, "rejected")
    assert answer["reason"] == "exceeds_remaining: 600 requested, 300 left of the payment"
    [refused] = await rows(
        stack,
        "payments",
        "SELECT refund_key, failure_reason FROM refunds WHERE order_id = :o AND status = :s",
        o=order_id,
        s="rejected",
    )
    assert (refused["refund_key"], refused["failure_reason"]) == (
        answer["refund_key"],
        answer["reason"],
    )
    assert not [x for x in await bus.dead_letters("payments") if order_id in x.body.decode()]
    [session] = await session_rows(stack, order_id)
    assert session["amount_refunded"] == 1200 <= session["amount_total"]
    assert await replies(stack, order_id) == 2


# --- helpers -----------------------------------------------------------------------------------


async def completed_card_order(
    stack: Stack, sim: httpx.AsyncClient
) -> tuple[Shopper, str, dict[str, Any]]:
    shopper, order_id, order = await awaiting_payment(stack)
    session_id = order["payment_url"].rsplit("/", 1)[-1]
    assert (await sim.post(f"/_sim/sessions/{session_id}/pay")).status_code == 200
    order = await shopper.wait_for(order_id, TERMINAL)
    assert order["status"] == "completed", order
    return shopper, order_id, order


async def refunds_are(stack: Stack, order_id: str, expected: list[tuple[int, str]]) -> bool:
    found = await rows(
        stack,
        "payments",
        "SELECT amount, status FROM refunds WHERE order_id = :o ORDER BY created_at",
        o=order_id,
    )
    return [(r["amount"], r["status"]) for r in found] == expected


async def replies(stack: Stack, order_id: str) -> int:
    found = await rows(
        stack,
        "payments",
        "SELECT count(*) AS n FROM outbox "
        "WHERE message_type = 'payments.payment_refunded' AND correlation_id = :o",
        o=order_id,
    )
    return int(found[0]["n"])
