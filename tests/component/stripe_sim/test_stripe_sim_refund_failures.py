"""Refunds that do not reach the customer, as Stripe reports them: refused when created (the
error replayed for its idempotency key), failed after Stripe accepted them (`refund.updated`,
`refund.failed`, `charge.refund.updated`, with a `failure_reason`), or canceled while pending.
Driven by the official `stripe` SDK; the events' objects keep Stripe's field sets."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import stripe
from stripe.params import RefundCreateParams

from tests.support.stripe_sim import (
    Sim,
    paid_intent,
    running_sim,
    webhook_receiver,
    webhooks_of,
)

# What a refund object carries once it has failed, besides Stripe's example refund's fields.
FAILED_REFUND_FIELDS = {"failure_reason", "failure_balance_transaction"}


def refund_events(sim: Sim, refund_id: str) -> list[tuple[str, str]]:
    """The refund's events at the simulator, oldest first, as (type, refund status)."""
    listed = sim.client().v1.events.list({"limit": 100}).data
    objects = [(e.type, e.data.object.to_dict()) for e in reversed(listed)]
    return [(kind, obj["status"]) for kind, obj in objects if obj["id"] == refund_id]


async def test_a_refund_the_bank_fails_after_it_succeeded_is_reported_three_ways(
    sim: Sim, client: stripe.StripeClient, fixtures: dict[str, Any]
) -> None:
    pi_id = await paid_intent(sim)
    refund = client.v1.refunds.create({"payment_intent": pi_id, "amount": 1000})
    await webhooks_of(sim, "refund.updated", refund.id)  # settled: succeeded

    failed = await sim.control(
        f"refunds/{refund.id}/fail", {"failure_reason": "lost_or_stolen_card"}
    )

    assert (failed["status"], failed["failure_reason"]) == ("failed", "lost_or_stolen_card")
    assert set(failed) == set(fixtures["refund"]) | FAILED_REFUND_FIELDS
    [update_failed] = [
        d.event
        for d in await webhooks_of(sim, "refund.updated", refund.id, at_least=2)
        if d.event["data"]["object"]["status"] == "failed"
    ]
    assert update_failed["data"]["previous_attributes"] == {
        "status": "succeeded",
        "failure_reason": None,
        "failure_balance_transaction": None,
    }
    for kind in ("refund.failed", "charge.refund.updated"):
        [delivery] = await webhooks_of(sim, kind, refund.id)
        assert delivery.event["data"]["object"]["failure_reason"] == "lost_or_stolen_card"
        assert set(delivery.event["data"]["object"]) == set(failed)
    assert refund_events(sim, refund.id) == [
        ("refund.created", "pending"),
        ("refund.updated", "succeeded"),
        ("refund.updated", "failed"),
        ("refund.failed", "failed"),
        ("charge.refund.updated", "failed"),
    ]
    again = client.v1.refunds.retrieve(refund.id)
    assert (again.status, again.failure_reason) == ("failed", "lost_or_stolen_card")
    # The money came back to the merchant: the whole charge can be refunded again.
    charge = client.v1.charges.retrieve(str(again.charge))
    assert (charge.amount_refunded, charge.refunded) == (0, False)
    assert client.v1.refunds.create({"payment_intent": pi_id}).amount == 3499


async def test_refunds_of_the_refund_failing_test_card_succeed_then_fail_by_themselves(
    sim: Sim, client: stripe.StripeClient
) -> None:
    # Stripe's test card 4000 0000 0000 5126: the refund is accepted, then fails later.
    pi_id = await paid_intent(sim, payment_method="card_refund_fails")
    charge = client.v1.charges.retrieve(
        str(client.v1.payment_intents.retrieve(pi_id).latest_charge)
    )
    assert charge.payment_method_details is not None
    assert charge.payment_method_details.card is not None
    assert charge.payment_method_details.card.last4 == "5126"

    refund = client.v1.refunds.create({"payment_intent": pi_id, "amount": 500})
    [delivery] = await webhooks_of(sim, "refund.failed", refund.id)

    assert delivery.event["data"]["object"]["failure_reason"] == "expired_or_canceled_card"
    assert refund_events(sim, refund.id)[:3] == [
        ("refund.created", "pending"),
        ("refund.updated", "succeeded"),
        ("refund.updated", "failed"),
    ]


async def test_a_pending_refund_can_be_canceled_and_never_settles_afterwards() -> None:
    with (
        webhook_receiver() as receiver,
        running_sim(receiver=receiver, refund_settle_seconds=1.0) as slow,
    ):
        pi_id = await paid_intent(slow)
        client = slow.client()
        refund = client.v1.refunds.create({"payment_intent": pi_id})

        canceled = await slow.control(f"refunds/{refund.id}/cancel")
        [delivery] = await webhooks_of(slow, "charge.refund.updated", refund.id)
        await asyncio.sleep(slow.config.refund_settle_seconds + 0.2)  # when it would settle

        assert canceled["status"] == "canceled"
        assert delivery.event["data"]["previous_attributes"] == {"status": "pending"}
        assert client.v1.refunds.retrieve(refund.id).status == "canceled"
        assert refund_events(slow, refund.id) == [
            ("refund.created", "pending"),
            ("refund.updated", "canceled"),
            ("charge.refund.updated", "canceled"),
        ]
        # Nothing of it was taken: the whole payment can still be refunded.
        assert client.v1.refunds.create({"payment_intent": pi_id}).amount == 3499


async def test_only_a_refund_still_on_its_way_can_fail_or_be_canceled(
    sim: Sim, client: stripe.StripeClient
) -> None:
    pi_id = await paid_intent(sim)
    refund = client.v1.refunds.create({"payment_intent": pi_id, "amount": 100})
    await webhooks_of(sim, "refund.updated", refund.id)  # succeeded
    await sim.control(f"refunds/{refund.id}/fail", {"failure_reason": "declined"})

    async with httpx.AsyncClient(base_url=f"{sim.url}/_sim/refunds") as http:
        twice = await http.post(f"/{refund.id}/fail", json={})
        cancel_after_success = await http.post(f"/{refund.id}/cancel")
        unknown = await http.post("/re_unknown/fail", json={})
        not_a_reason = await http.post(f"/{refund.id}/fail", json={"failure_reason": "bored"})

    assert twice.status_code == 400 and "failed" in twice.json()["error"]["message"]
    assert cancel_after_success.status_code == 400
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "resource_missing")
    assert not_a_reason.status_code == 422


async def test_a_refund_refused_at_creation_is_refused_again_for_its_idempotency_key(
    sim: Sim, client: stripe.StripeClient
) -> None:
    pi_id = await paid_intent(sim)
    client.v1.refunds.create({"payment_intent": pi_id})  # all of it, from the Dashboard
    ours: RefundCreateParams = {"payment_intent": pi_id, "amount": 1000}
    key: stripe.RequestOptions = {"idempotency_key": f"{pi_id}:refund:k"}

    with pytest.raises(stripe.InvalidRequestError) as first:
        client.v1.refunds.create(ours, key)
    with pytest.raises(stripe.InvalidRequestError) as replayed:
        client.v1.refunds.create(ours, key)

    assert (first.value.http_status, first.value.code) == (400, "charge_already_refunded")
    assert replayed.value.code == "charge_already_refunded"
    assert replayed.value.headers is not None
    assert replayed.value.headers.get("idempotent-replayed") == "true"
