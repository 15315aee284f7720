"""RefundPayment through the real `stripe` SDK against the simulator: one Stripe refund per
(order, refund key), never more than was paid, its status followed from the webhooks."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from services.payments.domain import RefundKeyReused
from services.payments.models import PaymentSession, Refund, StripeEvent
from shared.messages.contracts import PaymentRefunded, RefundPayment
from tests.support.payments import (
    forward,
    paid_order,
    refund_failed,
    refund_outcomes,
    refunded,
    send_create,
)
from tests.support.rig import ServiceRig
from tests.support.stripe_sim import Sim, sent_events, webhooks_of


def refund_command(order: str, amount: int, key: str = "failed-lines-2") -> RefundPayment:
    return RefundPayment(order_id=order, refund_key=key, amount=amount, reason="line 2 failed")


async def refunds_of(payments: ServiceRig, order: str) -> list[Refund]:
    stmt = select(Refund).where(Refund.order_id == order).order_by(Refund.created_at)
    async with payments.runtime.sessionmaker() as session:
        return list((await session.execute(stmt)).scalars())


async def amount_refunded(payments: ServiceRig, order: str) -> int:
    async with payments.runtime.sessionmaker() as session:
        row = await session.get(PaymentSession, order)
    assert row is not None
    return row.amount_refunded


def refunds_created_at_stripe(sim: Sim, intent: str) -> list[dict[str, Any]]:
    return [
        event["data"]["object"]
        for event in sent_events(sim, "refund.created")
        if event["data"]["object"]["payment_intent"] == intent
    ]


async def test_a_partial_refund_is_made_at_stripe_and_followed_until_it_succeeded(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, _, intent = await paid_order(payments_on_sim, stripe_sim)

    await payments_on_sim.deliver(refund_command(order, 1000), correlation_id=order)

    [reply] = await payments_on_sim.emitted(PaymentRefunded.TYPE)
    assert reply.payload == {"order_id": order, "refund_key": "failed-lines-2", "amount": 1000}
    assert reply.correlation_id == order
    [row] = await refunds_of(payments_on_sim, order)
    assert (row.amount, row.status, row.reason) == (1000, "pending", "line 2 failed")
    assert await amount_refunded(payments_on_sim, order) == 1000
    [created] = refunds_created_at_stripe(stripe_sim, intent)
    assert (created["id"], created["amount"]) == (row.stripe_refund_id, 1000)
    assert created["metadata"] == {
        "order_id": order,
        "refund_key": "failed-lines-2",
        "reason": "line 2 failed",
    }
    [event] = [
        e for e in sent_events(stripe_sim, "refund.created") if e["data"]["object"] == created
    ]
    assert event["request"]["idempotency_key"] == f"{order}:refund:failed-lines-2"

    # Stripe settles the refund: refund.updated and charge.refunded come in.
    assert row.stripe_refund_id is not None
    await forward(
        payments_on_sim, await webhooks_of(stripe_sim, "refund.updated", row.stripe_refund_id)
    )
    [row] = await refunds_of(payments_on_sim, order)
    assert row.status == "succeeded"
    charge_id = created["charge"]
    await forward(payments_on_sim, await webhooks_of(stripe_sim, "charge.refunded", charge_id))
    async with payments_on_sim.runtime.sessionmaker() as session:
        pending = (
            await session.execute(
                select(StripeEvent.type).where(StripeEvent.processed_at.is_(None))
            )
        ).all()
    assert pending == []


async def test_a_repeated_refund_command_replays_the_reply_without_a_second_refund(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, _, intent = await paid_order(payments_on_sim, stripe_sim)

    await payments_on_sim.deliver(refund_command(order, 500), correlation_id=order)
    await payments_on_sim.deliver(refund_command(order, 500), correlation_id=order)  # saga resends

    assert [e.payload["amount"] for e in await payments_on_sim.emitted(PaymentRefunded.TYPE)] == [
        500,
        500,
    ]
    assert len(await refunds_of(payments_on_sim, order)) == 1
    assert len(refunds_created_at_stripe(stripe_sim, intent)) == 1
    assert await amount_refunded(payments_on_sim, order) == 500
    with pytest.raises(RefundKeyReused):
        await payments_on_sim.deliver(refund_command(order, 501), correlation_id=order)


async def test_refunds_of_one_order_never_exceed_what_was_paid(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, _, intent = await paid_order(payments_on_sim, stripe_sim)  # 2999 paid
    await payments_on_sim.deliver(refund_command(order, 2000, key="a"), correlation_id=order)

    # Refused here, before Stripe is asked, and answered (not dead-lettered); a repeat gets the
    # same answer from the stored row.
    for _ in range(2):
        await payments_on_sim.deliver(refund_command(order, 1000, key="b"), correlation_id=order)
    await payments_on_sim.deliver(refund_command(order, 999, key="c"), correlation_id=order)

    exceeds = "exceeds_remaining: 1000 requested, 999 left of the payment"
    refused = refund_failed(order, 1000, exceeds, key="b", status="rejected")
    assert await refund_outcomes(payments_on_sim, order) == [
        refunded(order, 2000, "a"),
        refused,
        refused,
        refunded(order, 999, "c"),
    ]
    rows = [(r.refund_key, r.amount, r.status) for r in await refunds_of(payments_on_sim, order)]
    assert rows == [("a", 2000, "pending"), ("b", 1000, "rejected"), ("c", 999, "pending")]
    assert await amount_refunded(payments_on_sim, order) == 2999
    # The refused one never reached Stripe.
    assert sorted(r["amount"] for r in refunds_created_at_stripe(stripe_sim, intent)) == [999, 2000]


async def test_an_order_without_a_completed_payment_has_nothing_to_refund(
    payments_on_sim: ServiceRig,
) -> None:
    unpaid = str(uuid.uuid4())
    unknown = str(uuid.uuid4())
    await send_create(payments_on_sim, unpaid)

    for order in (unpaid, unknown):
        await payments_on_sim.deliver(refund_command(order, 100), correlation_id=order)

        refused = refund_failed(order, 100, "no_completed_payment", status="rejected")
        assert await refund_outcomes(payments_on_sim, order) == [refused]
        [row] = await refunds_of(payments_on_sim, order)
        assert (row.stripe_refund_id, row.status) == (None, "rejected")
    assert (await payments_on_sim.emitted(PaymentRefunded.TYPE)) == []
    assert await amount_refunded(payments_on_sim, unpaid) == 0
