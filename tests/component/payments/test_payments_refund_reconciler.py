"""The refund reconciler: a refund whose webhooks were lost stays `pending` in our table until
someone asks Stripe. Asked, it settles the refund as the webhook would have — once, whoever
else (a webhook arriving after all, another round) learns about it later. Webhooks the
simulator sends reach the service only when a test forwards them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.payments.bootstrap import build
from shared.messages.contracts import PaymentRefunded, RefundFailed
from tests.support.payments import (
    forward,
    paid_order,
    reconcile_refunds,
    refund_failed,
    refund_outcomes,
    refund_payment,
    refunded,
    settings_on_sim,
    stored_refund,
    stored_session,
)
from tests.support.rig import Rigs, ServiceRig, as_user, sqlite_url
from tests.support.stripe_sim import Sim, running_sim, webhook_receiver, webhooks_of
from tests.support.waiting import eventually


async def refunded_order(payments: ServiceRig, sim: Sim, amount: int = 1000) -> tuple[str, str]:
    """A paid order with a refund Stripe accepted (PaymentRefunded sent): (order, refund id)."""
    order, _, _ = await paid_order(payments, sim)
    await payments.deliver(refund_payment(order, amount), correlation_id=order)
    refund_id = (await stored_refund(payments, order, "failed-lines-2")).stripe_refund_id
    assert refund_id is not None
    return order, refund_id


async def test_a_refund_whose_webhooks_were_lost_is_settled_without_a_second_answer(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, refund_id = await refunded_order(payments_on_sim, stripe_sim)
    await webhooks_of(stripe_sim, "refund.updated", refund_id)  # succeeded at Stripe, not here

    too_young = await reconcile_refunds(payments_on_sim)  # default age: left to the webhook
    found = await reconcile_refunds(payments_on_sim, older_than_seconds=0)

    assert too_young.json() == {"checked": 0, "changed": [], "errors": []}
    assert found.status_code == 200, found.text
    assert found.json()["changed"] == [
        {
            "order_id": order,
            "refund_key": "failed-lines-2",
            "stripe_refund_id": refund_id,
            "status": "succeeded",
        }
    ]
    assert (await stored_refund(payments_on_sim, order, "failed-lines-2")).status == "succeeded"
    [(kind, _)] = await refund_outcomes(payments_on_sim, order)  # the command's answer only
    assert kind == PaymentRefunded.TYPE


async def test_a_refund_whose_failure_webhook_was_lost_is_announced_failed_once(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, refund_id = await refunded_order(payments_on_sim, stripe_sim)
    await stripe_sim.control(f"refunds/{refund_id}/fail", {"failure_reason": "lost_or_stolen_card"})

    found = await reconcile_refunds(payments_on_sim, older_than_seconds=0)
    again = await reconcile_refunds(payments_on_sim, older_than_seconds=0)
    # The webhook turns up after all: nothing more happens.
    await forward(payments_on_sim, await webhooks_of(stripe_sim, "refund.failed", refund_id))

    assert [c["status"] for c in found.json()["changed"]] == ["failed"]
    assert again.json() == {"checked": 0, "changed": [], "errors": []}  # nothing pending
    assert await refund_outcomes(payments_on_sim, order) == [
        refunded(order, 1000),
        refund_failed(order, 1000, "lost_or_stolen_card"),
    ]
    assert (await stored_session(payments_on_sim, order)).amount_refunded == 0


async def test_a_refund_stripe_cannot_show_now_is_asked_about_again_next_round(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order, refund_id = await refunded_order(payments_on_sim, stripe_sim)
    await webhooks_of(stripe_sim, "refund.updated", refund_id)
    await asyncio.sleep(0.6)  # pending here for longer than the age asked for below
    burst = {"method": "GET", "path_prefix": "/v1/refunds/", "count": 2, "status": 500}
    await stripe_sim.control("faults", {"api_errors": [burst]})
    try:
        unreadable = await reconcile_refunds(payments_on_sim, older_than_seconds=0.5)
    finally:
        await stripe_sim.control("faults", {"api_errors": []})
    # Not counted as asked: the next round (here at once) asks again.
    next_round = await reconcile_refunds(payments_on_sim, older_than_seconds=0.5)

    assert unreadable.json() == {"checked": 1, "changed": [], "errors": [refund_id]}
    assert [c["status"] for c in next_round.json()["changed"]] == ["succeeded"]
    assert (await stored_refund(payments_on_sim, order, "failed-lines-2")).status == "succeeded"


async def test_a_refund_pending_at_stripe_is_asked_about_again_and_announced_canceled(
    tmp_path: Path,
) -> None:
    # Refunds that stay pending until the test has canceled one.
    with (
        webhook_receiver() as receiver,
        running_sim(receiver=receiver, refund_settle_seconds=30) as slow,
    ):
        async with Rigs() as rigs:
            settings = settings_on_sim(sqlite_url(tmp_path / "payments.db"), slow)
            payments = await rigs.start(ServiceRig, build, settings)
            order, refund_id = await refunded_order(payments, slow, amount=2999)
            await asyncio.sleep(0.6)
            still_pending = await reconcile_refunds(payments, older_than_seconds=0.5)
            asked_just_now = await reconcile_refunds(payments, older_than_seconds=0.5)
            await slow.control(f"refunds/{refund_id}/cancel")

            found = await reconcile_refunds(payments, older_than_seconds=0)

            assert still_pending.json() == {"checked": 1, "changed": [], "errors": []}
            assert asked_just_now.json()["checked"] == 0  # asked less than 0.5 s ago
            assert [c["status"] for c in found.json()["changed"]] == ["canceled"]
            [_, (kind, answer)] = await refund_outcomes(payments, order)
            assert (kind, answer["status"], answer["amount"]) == (
                RefundFailed.TYPE,
                "canceled",
                2999,
            )
            assert answer["reason"]
            assert (await stored_session(payments, order)).amount_refunded == 0


async def test_only_operators_may_reconcile_refunds(payments_on_sim: ServiceRig) -> None:
    callers: list[dict[str, str]] = [{}, as_user("shopper-1")]  # anonymous, a shopper
    answers = [
        await payments_on_sim.http.post("/operator/refunds/reconcile", headers=headers)
        for headers in callers
    ]

    assert [answer.status_code for answer in answers] == [401, 403]


async def test_the_background_reconciler_announces_a_lost_refund_failure_on_its_own(
    tmp_path: Path, stripe_sim: Sim
) -> None:
    settings = settings_on_sim(
        sqlite_url(tmp_path / "payments.db"),
        stripe_sim,
        reconcile_interval_seconds=0.1,
        refund_reconcile_after_seconds=0,
    )
    async with Rigs() as rigs:
        payments = await rigs.start(ServiceRig, build, settings)
        order, refund_id = await refunded_order(payments, stripe_sim)
        await stripe_sim.control(f"refunds/{refund_id}/fail", {"failure_reason": "declined"})

        async def announced_failed() -> bool:
            return bool(await payments.emitted(RefundFailed.TYPE))

        await eventually(announced_failed, within=5.0)
        await asyncio.sleep(0.3)  # a few more rounds: still one

        [announced] = await payments.emitted(RefundFailed.TYPE)
    assert (announced.payload["order_id"], announced.payload["reason"]) == (order, "declined")
