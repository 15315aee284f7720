"""Refunds that do not reach the shopper, through the real `stripe` SDK against the simulator:
one Stripe refuses outright is answered RefundFailed(rejected) and never looped on; one that
fails after Stripe accepted it is announced RefundFailed(failed) once, however many webhooks
tell it; either frees its amount for the operator's retry under a new key. Webhooks the
simulator sends reach the service only when a test forwards them."""

from __future__ import annotations

from shared.delivery import Outcome, deliver
from shared.messages import Envelope
from shared.messages.contracts import PaymentRefunded, RefundFailed
from tests.support.payments import (
    forward,
    paid_order,
    refund_elsewhere,
    refund_failed,
    refund_outcomes,
    refund_payment,
    refunded,
    stored_refund,
    stored_session,
)
from tests.support.rig import ServiceRig
from tests.support.stripe_sim import Sim, sent_events, webhooks_of

# --- refused by Stripe when asked ------------------------------------------------------------


async def test_a_refund_stripe_refuses_is_answered_refund_failed_and_never_retried(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, _, intent = await paid_order(payments_on_sim, stripe_sim)  # 2999 paid
    await refund_elsewhere(stripe_sim, intent)  # all of it, from the Dashboard
    command = Envelope.wrap(refund_payment(order, 1000), correlation_id=order)

    verdict = await deliver(command.to_bytes(), payments_on_sim.runtime.dispatcher)

    assert verdict.outcome is Outcome.ACK  # answered: neither retried nor dead-lettered
    [(kind, answer)] = await refund_outcomes(payments_on_sim, order)
    assert kind == RefundFailed.TYPE
    assert {k: v for k, v in answer.items() if k != "reason"} == {
        "order_id": order,
        "refund_key": "failed-lines-2",
        "amount": 1000,
        "status": "rejected",
    }
    assert "charge_already_refunded" in answer["reason"]
    row = await stored_refund(payments_on_sim, order, "failed-lines-2")
    assert (row.status, row.stripe_refund_id, row.amount) == ("rejected", None, 1000)
    assert row.failure_reason == answer["reason"]
    assert (await stored_session(payments_on_sim, order)).amount_refunded == 0  # hold released


async def test_the_same_refund_command_after_a_refusal_is_answered_refund_failed_again(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, _, intent = await paid_order(payments_on_sim, stripe_sim)
    await refund_elsewhere(stripe_sim, intent)
    await payments_on_sim.deliver(refund_payment(order, 1000), correlation_id=order)
    await stripe_sim.control("faults", {"api_errors": [{"path_prefix": "/v1/refunds"}]})
    try:
        # The saga's re-send (a new message): answered from the row, Stripe is not asked.
        await payments_on_sim.deliver(refund_payment(order, 1000), correlation_id=order)
        unused = (await stripe_sim.control("faults", {}))["api_errors"]
    finally:
        await stripe_sim.control("faults", {"api_errors": []})

    first, again = await refund_outcomes(payments_on_sim, order)
    assert first == again
    assert (first[0], first[1]["status"]) == (RefundFailed.TYPE, "rejected")
    assert unused == [{"method": None, "path_prefix": "/v1/refunds", "count": 1, "status": 500}]


async def test_a_refused_refund_frees_its_amount_for_the_retry_under_a_new_key(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, _, intent = await paid_order(payments_on_sim, stripe_sim)  # 2999 paid
    await refund_elsewhere(stripe_sim, intent, 2000)  # 999 left at Stripe

    await payments_on_sim.deliver(refund_payment(order, 2999, "all"), correlation_id=order)
    await payments_on_sim.deliver(refund_payment(order, 999, "all-retry1"), correlation_id=order)

    refused, retried = await refund_outcomes(payments_on_sim, order)
    assert (refused[0], refused[1]["status"]) == (RefundFailed.TYPE, "rejected")
    assert "amount_too_large" in refused[1]["reason"]
    assert retried == refunded(order, 999, "all-retry1")
    assert (await stored_session(payments_on_sim, order)).amount_refunded == 999


async def test_a_refund_stripe_cannot_take_now_waits_for_the_bus_retry(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, _, _ = await paid_order(payments_on_sim, stripe_sim)
    # Every attempt the gateway makes (stripe_max_attempts=2 in the test settings) gets a 503.
    burst = {"method": "POST", "path_prefix": "/v1/refunds", "count": 2, "status": 503}
    await stripe_sim.control("faults", {"api_errors": [burst]})
    command = Envelope.wrap(refund_payment(order, 1000), correlation_id=order)
    try:
        verdict = await deliver(command.to_bytes(), payments_on_sim.runtime.dispatcher)
    finally:
        await stripe_sim.control("faults", {"api_errors": []})

    assert verdict.outcome is Outcome.RETRY
    assert await refund_outcomes(payments_on_sim, order) == []
    assert (await stored_session(payments_on_sim, order)).amount_refunded == 0

    await payments_on_sim.redeliver(command)  # the bus's retry, once Stripe answers again

    [(kind, _)] = await refund_outcomes(payments_on_sim, order)
    assert kind == PaymentRefunded.TYPE


# --- failed after Stripe accepted it ---------------------------------------------------------


async def test_a_refund_that_fails_after_stripe_accepted_it_is_announced_once(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, _, _ = await paid_order(payments_on_sim, stripe_sim)
    await payments_on_sim.deliver(refund_payment(order, 1000), correlation_id=order)
    refund_id = (await stored_refund(payments_on_sim, order, "failed-lines-2")).stripe_refund_id
    assert refund_id is not None
    await webhooks_of(stripe_sim, "refund.updated", refund_id)  # settled: succeeded

    await stripe_sim.control(f"refunds/{refund_id}/fail", {"failure_reason": "lost_or_stolen_card"})
    # Everything Stripe says about it, and a second copy of refund.failed on top.
    updates = await webhooks_of(stripe_sim, "refund.updated", refund_id, at_least=2)
    [failed] = await webhooks_of(stripe_sim, "refund.failed", refund_id)
    [legacy] = await webhooks_of(stripe_sim, "charge.refund.updated", refund_id)
    await forward(payments_on_sim, [*updates, failed, legacy, failed])

    assert await refund_outcomes(payments_on_sim, order) == [
        refunded(order, 1000),
        refund_failed(order, 1000, "lost_or_stolen_card"),
    ]
    [announced] = await payments_on_sim.emitted(RefundFailed.TYPE)
    assert announced.correlation_id == order
    row = await stored_refund(payments_on_sim, order, "failed-lines-2")
    assert (row.status, row.failure_reason) == ("failed", "lost_or_stolen_card")
    assert (await stored_session(payments_on_sim, order)).amount_refunded == 0


async def test_a_failed_refund_is_answered_refund_failed_to_a_repeat_and_retried_anew(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, _, intent = await paid_order(payments_on_sim, stripe_sim)  # 2999 paid
    await payments_on_sim.deliver(refund_payment(order, 2999, "all"), correlation_id=order)
    refund_id = (await stored_refund(payments_on_sim, order, "all")).stripe_refund_id
    assert refund_id is not None
    await stripe_sim.control(f"refunds/{refund_id}/fail", {"failure_reason": "declined"})
    await forward(payments_on_sim, await webhooks_of(stripe_sim, "refund.failed", refund_id))

    await payments_on_sim.deliver(refund_payment(order, 2999, "all"), correlation_id=order)
    await payments_on_sim.deliver(refund_payment(order, 2999, "all-retry1"), correlation_id=order)

    kinds = [
        (kind, answer["refund_key"])
        for kind, answer in await refund_outcomes(payments_on_sim, order)
    ]
    assert kinds == [
        (PaymentRefunded.TYPE, "all"),
        (RefundFailed.TYPE, "all"),  # the webhook
        (RefundFailed.TYPE, "all"),  # the repeat, answered from the row
        (PaymentRefunded.TYPE, "all-retry1"),
    ]
    made = [
        e["data"]["object"]["amount"]
        for e in sent_events(stripe_sim, "refund.created")
        if e["data"]["object"]["payment_intent"] == intent
    ]
    assert made == [2999, 2999]  # the failed one gave its amount back at Stripe too
    assert (await stored_session(payments_on_sim, order)).amount_refunded == 2999


async def test_refunds_of_the_refund_failing_test_card_end_refund_failed(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, _, _ = await paid_order(payments_on_sim, stripe_sim, payment_method="card_refund_fails")
    await payments_on_sim.deliver(refund_payment(order, 500), correlation_id=order)
    refund_id = (await stored_refund(payments_on_sim, order, "failed-lines-2")).stripe_refund_id
    assert refund_id is not None

    await forward(
        payments_on_sim, await webhooks_of(stripe_sim, "charge.refund.updated", refund_id)
    )

    [_, (kind, answer)] = await refund_outcomes(payments_on_sim, order)
    assert (kind, answer["status"], answer["reason"]) == (
        RefundFailed.TYPE,
        "failed",
        "expired_or_canceled_card",
    )
