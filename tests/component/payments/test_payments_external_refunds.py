"""Refunds of our payments made outside this service (in the Dashboard, by another tool): their
events carry no refund key of ours, and they are recorded as refunds of the order under the key
`external:<refund id>`, so what the saga may still refund is what is really left at Stripe.
Nothing is announced about them: the saga never asked for them."""

from __future__ import annotations

from tests.support.payments import (
    forward,
    paid_order,
    reconcile_refunds,
    refund_failed,
    refund_outcomes,
    refund_payment,
    refunded,
    stored_refund,
    stored_session,
)
from tests.support.rig import ServiceRig
from tests.support.stripe_sim import Sim, sent_events, webhooks_of


async def refunded_outside(sim: Sim, intent: str, amount: int) -> str:
    """A refund made in the Dashboard (no metadata of ours); its id."""
    made = await sim.control(f"payment_intents/{intent}/refund_outside", {"amount": amount})
    assert made["metadata"] == {}
    return str(made["id"])


def refunds_made_at_stripe(sim: Sim, intent: str) -> list[int]:
    return [
        e["data"]["object"]["amount"]
        for e in sent_events(sim, "refund.created")
        if e["data"]["object"]["payment_intent"] == intent
    ]


async def test_a_dashboard_refund_caps_what_the_saga_may_refund_after_it(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, _, intent = await paid_order(payments_on_sim, stripe_sim)  # 2999 paid
    outside = await refunded_outside(stripe_sim, intent, 1000)
    await forward(payments_on_sim, await webhooks_of(stripe_sim, "refund.created", outside))

    # The rest and one more: refused here, before Stripe is asked, and answered.
    await payments_on_sim.deliver(refund_payment(order, 2000, "rest-and-one"), correlation_id=order)
    await payments_on_sim.deliver(refund_payment(order, 1999, "rest"), correlation_id=order)

    row = await stored_refund(payments_on_sim, order, f"external:{outside}")
    assert (row.stripe_refund_id, row.amount, row.status) == (outside, 1000, "pending")
    assert row.trace_id == order
    refused = await stored_refund(payments_on_sim, order, "rest-and-one")
    assert (refused.stripe_refund_id, refused.status) == (None, "rejected")
    # Before: the Dashboard refund was only logged, Stripe was asked for 2000 and refused it.
    exceeds = "exceeds_remaining: 2000 requested, 1999 left of the payment"
    assert await refund_outcomes(payments_on_sim, order) == [
        refund_failed(order, 2000, exceeds, key="rest-and-one", status="rejected"),
        refunded(order, 1999, "rest"),
    ]
    assert refunds_made_at_stripe(stripe_sim, intent) == [1000, 1999]
    assert (await stored_session(payments_on_sim, order)).amount_refunded == 2999


async def test_a_dashboard_refunds_events_in_any_order_record_it_once(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, _, intent = await paid_order(payments_on_sim, stripe_sim)
    outside = await refunded_outside(stripe_sim, intent, 700)
    created = await webhooks_of(stripe_sim, "refund.created", outside)
    settled = await webhooks_of(stripe_sim, "refund.updated", outside)
    charge = created[0].event["data"]["object"]["charge"]
    [charge_refunded] = await webhooks_of(stripe_sim, "charge.refunded", charge)

    await forward(payments_on_sim, [charge_refunded, *settled, *created, charge_refunded])

    row = await stored_refund(payments_on_sim, order, f"external:{outside}")
    assert (row.amount, row.status) == (700, "succeeded")
    assert (await stored_session(payments_on_sim, order)).amount_refunded == 700
    assert await refund_outcomes(payments_on_sim, order) == []


async def test_a_dashboard_refund_that_fails_gives_its_amount_back_and_announces_nothing(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, _, intent = await paid_order(payments_on_sim, stripe_sim)
    outside = await refunded_outside(stripe_sim, intent, 2999)
    await forward(payments_on_sim, await webhooks_of(stripe_sim, "refund.created", outside))

    await stripe_sim.control(f"refunds/{outside}/fail", {"failure_reason": "declined"})
    await forward(payments_on_sim, await webhooks_of(stripe_sim, "refund.failed", outside))

    row = await stored_refund(payments_on_sim, order, f"external:{outside}")
    assert (row.status, row.failure_reason) == ("failed", "declined")
    assert (await stored_session(payments_on_sim, order)).amount_refunded == 0
    assert await refund_outcomes(payments_on_sim, order) == []  # no RefundFailed for the saga


async def test_a_dashboard_refund_whose_later_webhooks_were_lost_is_settled_by_the_reconciler(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, _, intent = await paid_order(payments_on_sim, stripe_sim)
    outside = await refunded_outside(stripe_sim, intent, 500)
    await forward(payments_on_sim, await webhooks_of(stripe_sim, "refund.created", outside))
    await webhooks_of(stripe_sim, "refund.updated", outside)  # succeeded at Stripe, not forwarded

    answer = await reconcile_refunds(payments_on_sim, older_than_seconds=0)

    assert answer.status_code == 200
    assert [c["refund_key"] for c in answer.json()["changed"]] == [f"external:{outside}"]
    assert (
        await stored_refund(payments_on_sim, order, f"external:{outside}")
    ).status == "succeeded"
    assert await refund_outcomes(payments_on_sim, order) == []
