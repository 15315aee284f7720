"""Disputes of our payments: every `charge.dispute.*` event moves one row per dispute, found by
the disputed payment intent, to Stripe's newest status whatever order the events come in;
operators list them, and each change is logged at warning (no contract announces it yet)."""

from __future__ import annotations

import logging

import pytest

from services.payments.domain import as_utc
from shared.messages.contracts import PaymentDisputed
from tests.support.payments import completed, forward, open_session, paid_order, post_webhook
from tests.support.payments_stripe_events import (
    dispute,
    operator_disputes,
    post_event,
    stored_dispute,
    stored_event,
)
from tests.support.rig import ServiceRig, as_user, new_order_id
from tests.support.stripe_sim import Sim, signed, stripe_event, webhooks_of


async def paid_session(payments: ServiceRig) -> str:
    """An order paid through payment intent `pi_test_123` (its webhook posted); the order."""
    order = new_order_id()
    session_id = await open_session(payments, order, amount=2999)
    body = stripe_event("checkout.session.completed", completed(session_id, order, amount=2999))
    assert (await post_webhook(payments, body, signed(body)))[0] == 200
    return order


async def test_a_dispute_opened_and_lost_at_stripe_is_recorded_and_shown_to_operators(
    payments_on_sim: ServiceRig, stripe_sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    order, _, intent = await paid_order(payments_on_sim, stripe_sim)  # 2999 EUR
    opened = await stripe_sim.control(f"payment_intents/{intent}/dispute", {"reason": "fraudulent"})
    dispute_id = opened["id"]
    caplog.set_level(logging.WARNING, logger="services.payments.stripe_events")

    await forward(
        payments_on_sim, await webhooks_of(stripe_sim, "charge.dispute.created", dispute_id)
    )
    await forward(
        payments_on_sim, await webhooks_of(stripe_sim, "charge.dispute.funds_withdrawn", dispute_id)
    )
    needing_response = await operator_disputes(payments_on_sim, status="needs_response")
    await stripe_sim.control(f"disputes/{dispute_id}/close", {"status": "lost"})
    await forward(
        payments_on_sim, await webhooks_of(stripe_sim, "charge.dispute.closed", dispute_id)
    )
    lost = await operator_disputes(payments_on_sim, status="lost")

    assert needing_response.status_code == 200
    [listed] = needing_response.json()["disputes"]
    assert {k: listed[k] for k in ("dispute_id", "order_id", "amount", "currency", "reason")} == {
        "dispute_id": dispute_id,
        "order_id": order,
        "amount": 2999,
        "currency": "eur",
        "reason": "fraudulent",
    }
    assert listed["payment_intent_id"] == intent
    assert [d["dispute_id"] for d in lost.json()["disputes"]] == [dispute_id]
    assert (await operator_disputes(payments_on_sim, status="needs_response")).json() == {
        "disputes": []
    }
    row = await stored_dispute(payments_on_sim, dispute_id)
    assert (row.order_id, row.status, row.charge_id) == (order, "lost", opened["charge"])
    # Opened, then lost: two changes said, funds_withdrawn (no new status) said nothing.
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said == [
        f"payment disputed: dispute {dispute_id} is needs_response (fraudulent, 2999 eur)",
        f"payment disputed: dispute {dispute_id} is lost (fraudulent, 2999 eur)",
    ]
    # The same two changes said to the saga, which shows them on the order.
    disputes = await payments_on_sim.emitted(PaymentDisputed.TYPE)
    assert [(e.payload["status"], e.payload["amount"]) for e in disputes] == [
        ("needs_response", 2999),
        ("lost", 2999),
    ]
    assert {e.correlation_id for e in disputes} == {order}


async def test_dispute_events_arriving_out_of_order_leave_stripes_newest_status(
    payments: ServiceRig,
) -> None:
    order = await paid_session(payments)
    closed = dispute("pi_test_123", status="won")
    review = dispute("pi_test_123", status="under_review")
    opened = dispute("pi_test_123", status="needs_response")

    events = [
        await post_event(payments, "charge.dispute.closed", closed, created=1_700_000_300),
        await post_event(payments, "charge.dispute.created", opened, created=1_700_000_100),
        await post_event(payments, "charge.dispute.updated", review, created=1_700_000_200),
    ]

    row = await stored_dispute(payments, "dp_test_1")
    assert (row.order_id, row.status, row.amount, row.reason) == (order, "won", 2999, "fraudulent")
    assert as_utc(row.status_at).timestamp() == 1_700_000_300
    for event_id in events:
        stored = await stored_event(payments, event_id)
        assert stored.processed_at is not None and stored.ignored_at is None


async def test_within_one_second_the_status_further_along_wins(payments: ServiceRig) -> None:
    await paid_session(payments)
    at = 1_700_000_000

    # Stripe's `created` has whole seconds: a dispute lost in the second it was opened.
    await post_event(
        payments, "charge.dispute.closed", dispute("pi_test_123", status="lost"), created=at
    )
    await post_event(payments, "charge.dispute.created", dispute("pi_test_123"), created=at)
    await post_event(payments, "charge.dispute.funds_withdrawn", dispute("pi_test_123"), created=at)

    assert (await stored_dispute(payments, "dp_test_1")).status == "lost"


async def test_the_same_dispute_event_twice_is_one_row(payments: ServiceRig) -> None:
    order = await paid_session(payments)
    body = stripe_event("charge.dispute.created", dispute("pi_test_123"))

    for _ in range(2):
        assert (await post_webhook(payments, body, signed(body)))[0] == 200

    answer = await operator_disputes(payments, order_id=order)
    assert [d["status"] for d in answer.json()["disputes"]] == ["needs_response"]


async def test_operators_list_disputes_by_status_and_order_newest_first(
    payments: ServiceRig,
) -> None:
    order = await paid_session(payments)
    await post_event(
        payments, "charge.dispute.created", dispute("pi_test_123", created=1_700_000_000)
    )
    newer = dispute("pi_test_123", dispute_id="dp_test_2", created=1_700_000_500, status="won")
    await post_event(payments, "charge.dispute.closed", newer)

    every = await operator_disputes(payments)
    won = await operator_disputes(payments, status="won")
    of_another_order = await operator_disputes(payments, order_id=new_order_id())
    limited = await operator_disputes(payments, limit=1)

    assert [d["dispute_id"] for d in every.json()["disputes"]] == ["dp_test_2", "dp_test_1"]
    assert [d["dispute_id"] for d in won.json()["disputes"]] == ["dp_test_2"]
    assert of_another_order.json() == {"disputes": []}
    assert [d["dispute_id"] for d in limited.json()["disputes"]] == ["dp_test_2"]
    assert {d["order_id"] for d in every.json()["disputes"]} == {order}


async def test_the_dispute_list_is_for_operators_and_knows_stripes_statuses(
    payments: ServiceRig,
) -> None:
    shopper = await payments.http.get("/operator/disputes", headers=as_user("shopper"))
    unknown = await operator_disputes(payments, status="lost_forever")

    assert shopper.status_code == 403
    assert unknown.status_code == 422
