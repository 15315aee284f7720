"""Disputes and refunds made outside the integration, as Stripe reports them: a cardholder's
dispute (`charge.dispute.created`, `charge.dispute.funds_withdrawn`, then
`charge.dispute.closed` and, when won, `charge.dispute.funds_reinstated`) in the shape of
Stripe's example dispute, and a refund made in the Dashboard (no metadata, its usual events)."""

from __future__ import annotations

from typing import Any

import httpx
import stripe

from tests.support.stripe_sim import Sim, paid_intent, webhooks_of


async def test_a_dispute_is_opened_with_stripes_fields_and_its_funds_withdrawn(
    sim: Sim, client: stripe.StripeClient, fixtures: dict[str, Any]
) -> None:
    pi_id = await paid_intent(sim)  # EUR 34.99

    opened = await sim.control(f"payment_intents/{pi_id}/dispute", {"reason": "fraudulent"})

    assert set(opened) == set(fixtures["dispute"])
    assert opened["id"].startswith("dp_")
    intent = client.v1.payment_intents.retrieve(pi_id)
    assert {k: opened[k] for k in ("charge", "payment_intent", "amount", "currency")} == {
        "charge": intent.latest_charge,
        "payment_intent": pi_id,
        "amount": 3499,
        "currency": "eur",
    }
    assert (opened["reason"], opened["status"], opened["object"]) == (
        "fraudulent",
        "needs_response",
        "dispute",
    )
    assert opened["is_charge_refundable"] is False  # a chargeback, not an inquiry
    assert opened["evidence_details"]["due_by"] > opened["created"]
    [created] = await webhooks_of(sim, "charge.dispute.created", opened["id"])
    [withdrawn] = await webhooks_of(sim, "charge.dispute.funds_withdrawn", opened["id"])
    assert created.event["data"]["object"] == opened
    assert withdrawn.event["data"]["object"]["status"] == "needs_response"
    assert client.v1.charges.retrieve(str(intent.latest_charge)).disputed is True


async def test_a_dispute_closed_won_reinstates_the_funds(sim: Sim) -> None:
    pi_id = await paid_intent(sim)
    opened = await sim.control(
        f"payment_intents/{pi_id}/dispute", {"reason": "general", "amount": 1000}
    )

    closed = await sim.control(f"disputes/{opened['id']}/close", {"status": "won"})

    assert (closed["status"], closed["amount"]) == ("won", 1000)
    [event] = await webhooks_of(sim, "charge.dispute.closed", opened["id"])
    assert event.event["data"]["object"]["status"] == "won"
    assert event.event["data"]["previous_attributes"] == {"status": "needs_response"}
    [reinstated] = await webhooks_of(sim, "charge.dispute.funds_reinstated", opened["id"])
    assert reinstated.event["data"]["object"]["status"] == "won"


async def test_a_dispute_closed_lost_keeps_the_funds_withdrawn(sim: Sim) -> None:
    pi_id = await paid_intent(sim)
    opened = await sim.control(
        f"payment_intents/{pi_id}/dispute", {"reason": "product_not_received"}
    )

    closed = await sim.control(f"disputes/{opened['id']}/close", {"status": "lost"})

    assert closed["status"] == "lost"
    await webhooks_of(sim, "charge.dispute.closed", opened["id"])
    assert sim.receiver is not None
    assert sim.receiver.for_object("charge.dispute.funds_reinstated", opened["id"]) == []


async def test_what_stripe_refuses_to_dispute_or_close(sim: Sim) -> None:
    pi_id = await paid_intent(sim)
    opened = await sim.control(f"payment_intents/{pi_id}/dispute", {"reason": "duplicate"})
    await sim.control(f"disputes/{opened['id']}/close", {"status": "lost"})

    async def refused(path: str, body: dict[str, Any]) -> tuple[int, str]:
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"{sim.url}/_sim/{path}", json=body)
        return answer.status_code, answer.json()["error"]["message"]

    twice = await refused(f"payment_intents/{pi_id}/dispute", {"reason": "general"})
    unknown = await refused("payment_intents/pi_nowhere/dispute", {"reason": "general"})
    too_much = await refused(
        f"payment_intents/{await paid_intent(sim)}/dispute", {"reason": "general", "amount": 3500}
    )
    closed_again = await refused(f"disputes/{opened['id']}/close", {"status": "won"})

    assert twice[0] == 400 and "already been disputed" in twice[1]
    assert unknown[0] == 404
    assert too_much[0] == 400 and "greater than" in too_much[1]
    assert closed_again[0] == 400 and "`lost`" in closed_again[1]


async def test_a_refund_made_outside_carries_no_metadata_and_sends_its_events(
    sim: Sim, client: stripe.StripeClient
) -> None:
    pi_id = await paid_intent(sim)

    made = await sim.control(f"payment_intents/{pi_id}/refund_outside", {"amount": 500})

    assert (made["object"], made["amount"], made["metadata"]) == ("refund", 500, {})
    assert made["payment_intent"] == pi_id
    [created] = await webhooks_of(sim, "refund.created", made["id"])
    await webhooks_of(sim, "refund.updated", made["id"])  # settled
    assert created.event["data"]["object"]["metadata"] == {}
    charge = client.v1.charges.retrieve(made["charge"])
    assert charge.amount_refunded == 500
