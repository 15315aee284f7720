"""Events about payments this service did not make (a Payment Link, another integration on the
same Stripe account, `stripe trigger`): recognised when they arrive, marked ignored with the
reason, never replayed, so they cannot crowd out an event of ours that came before its row."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from services.payments import recovery
from services.payments.models import StripeEvent
from shared.messages.contracts import PaymentSucceeded
from tests.support.payments import completed, open_session, refund_payment
from tests.support.payments_stripe_events import (
    dispute,
    foreign_session,
    post_event,
    stored_dispute,
    stored_event,
)
from tests.support.rig import ServiceRig, as_user, new_order_id


async def test_a_session_another_integration_made_is_ignored_at_once_and_never_replayed(
    payments: ServiceRig,
) -> None:
    event_id = await post_event(payments, "checkout.session.completed", foreign_session())

    replayed = await recovery.replay_events(payments.runtime)

    # Before: kept unprocessed, replayed (and warned about) every few seconds for 24 hours.
    assert event_id not in replayed.unprocessed
    assert replayed.applied == [] and replayed.ignored == []  # not even looked at again
    stored = await stored_event(payments, event_id)
    assert stored.processed_at is not None and stored.ignored_at is not None
    assert stored.ignored_reason == "checkout session of no order of ours"
    assert await payments.emitted() == []


async def test_a_hundred_foreign_events_do_not_hold_up_the_replay_of_one_of_ours(
    payments: ServiceRig,
) -> None:
    await asyncio.gather(
        *(post_event(payments, "checkout.session.completed", foreign_session()) for _ in range(100))
    )
    order = new_order_id()
    session_id = f"cs_test_{order.replace('-', '')}"
    # Ours, come before CreatePaymentSession stored its row (Stripe answered slowly).
    ours = await post_event(payments, "checkout.session.completed", completed(session_id, order))
    await open_session(payments, order)

    replayed = await recovery.replay_events(payments.runtime)

    # Before: the replay's batch (100, oldest first) held only the foreign ones.
    assert replayed.applied == [ours]
    [succeeded] = await payments.emitted(PaymentSucceeded.TYPE)
    assert succeeded.payload["order_id"] == order


async def test_an_event_of_ours_that_came_before_its_row_still_waits_for_the_replay(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    session_id = f"cs_test_{order.replace('-', '')}"
    early = await post_event(payments, "checkout.session.completed", completed(session_id, order))

    waiting = await recovery.replay_events(payments.runtime)
    await open_session(payments, order)
    replayed = await recovery.replay_events(payments.runtime)

    assert (waiting.unprocessed, waiting.ignored) == ([early], [])
    assert replayed.applied == [early]
    stored = await stored_event(payments, early)
    assert stored.processed_at is not None and stored.ignored_at is None
    assert len(await payments.emitted(PaymentSucceeded.TYPE)) == 1


async def test_a_session_naming_only_a_client_reference_id_is_taken_for_ours(
    payments: ServiceRig,
) -> None:
    # Stripe always sends our metadata; a client_reference_id alone may still be an order of
    # ours (a session made by hand for one), so it waits rather than being dropped.
    session = foreign_session() | {"client_reference_id": new_order_id()}
    event_id = await post_event(payments, "checkout.session.completed", session)

    assert (await recovery.replay_events(payments.runtime)).unprocessed == [event_id]
    assert (await stored_event(payments, event_id)).ignored_at is None


async def test_refunds_charges_and_disputes_of_payments_not_ours_are_ignored(
    payments: ServiceRig,
) -> None:
    intent = "pi_someone_else"
    refund = {
        "id": "re_someone_else",
        "object": "refund",
        "amount": 500,
        "currency": "usd",
        "payment_intent": intent,
        "status": "succeeded",
        "metadata": {},
    }
    charge = {
        "id": "ch_someone_else",
        "object": "charge",
        "payment_intent": intent,
        "refunds": {"object": "list", "data": [refund]},
    }
    events = [
        await post_event(payments, "refund.created", refund),
        await post_event(payments, "charge.refunded", charge),
        await post_event(payments, "charge.dispute.created", dispute(intent)),
    ]

    for event_id in events:
        stored = await stored_event(payments, event_id)
        assert stored.ignored_reason == "payment of no order of ours", stored.type
        assert stored.processed_at is not None
    assert (await recovery.replay_events(payments.runtime)).unprocessed == []
    assert await payments.emitted() == []


async def test_a_refund_of_ours_that_came_before_its_row_is_not_taken_for_a_foreign_one(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    refund = {
        "id": "re_ours_early",
        "object": "refund",
        "amount": 500,
        "currency": "eur",
        "payment_intent": "pi_not_stored_yet",
        "status": "pending",
        "metadata": {"order_id": order, "refund_key": refund_payment(order, 500).refund_key},
    }

    event_id = await post_event(payments, "refund.created", refund)

    stored = await stored_event(payments, event_id)
    assert (stored.processed_at, stored.ignored_at) == (None, None)


async def test_a_foreign_event_left_unprocessed_before_the_upgrade_is_ignored_by_the_replay(
    payments: ServiceRig,
) -> None:
    # What a database from before this change holds: a foreign event waiting for replay.
    async with payments.runtime.transaction() as db:
        db.add(
            StripeEvent(
                event_id="evt_left_over",
                type="checkout.session.expired",
                object_id="cs_test_left_over",
                payload=(
                    '{"id": "evt_left_over", "type": "checkout.session.expired", "created": 1,'
                    ' "data": {"object": {"id": "cs_test_left_over", "metadata": {}}}}'
                ),
                received_at=datetime.now(UTC),
            )
        )

    first = await recovery.replay_events(payments.runtime)
    second = await recovery.replay_events(payments.runtime)

    assert (first.ignored, first.unprocessed) == (["evt_left_over"], [])
    assert (second.ignored, second.unprocessed) == ([], [])
    assert (await stored_event(payments, "evt_left_over")).ignored_at is not None


async def test_the_operator_applies_an_ignored_event_again_once_its_payment_is_ours(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order, amount=2999)
    # The dispute came while the session's success (which names the intent) was still lost.
    early = await post_event(payments, "charge.dispute.created", dispute("pi_test_123"))
    assert (await stored_event(payments, early)).ignored_reason == "payment of no order of ours"
    await post_event(
        payments, "checkout.session.completed", completed(session_id, order, amount=2999)
    )

    answer = await payments.http.post(
        "/operator/stripe-events/replay",
        json={"event_ids": [early]},
        headers=as_user("ops", operator=True),
    )

    assert answer.json() == {"applied": [early], "unprocessed": [], "missing": []}
    stored = await stored_event(payments, early)
    assert (stored.ignored_at, stored.ignored_reason) == (None, None)
    assert (await stored_dispute(payments, "dp_test_1")).order_id == order


async def test_the_operators_replay_says_which_events_it_marked_ignored(
    payments: ServiceRig,
) -> None:
    foreign = await post_event(payments, "checkout.session.completed", foreign_session())

    answer = await payments.http.post(
        "/operator/stripe-events/replay",
        json={"event_ids": [foreign]},
        headers=as_user("ops", operator=True),
    )

    assert answer.json() == {"applied": [], "unprocessed": [], "missing": [], "ignored": [foreign]}
