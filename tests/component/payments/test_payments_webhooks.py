"""The Stripe webhook: signatures verified as Stripe signs them, events stored and applied once."""

from __future__ import annotations

import time

from services.payments import repository
from shared.messages.contracts import PaymentExpired, PaymentSucceeded
from tests.support.payments import (
    completed,
    open_session,
    post_webhook,
    stored_events,
    stored_session,
)
from tests.support.rig import ServiceRig, new_order_id
from tests.support.stripe_sim import WEBHOOK_SECRET, signed, stripe_event


async def test_a_paid_session_emits_payment_succeeded_once(payments: ServiceRig) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    body = stripe_event("checkout.session.completed", completed(session_id, order))

    first = await post_webhook(payments, body, signed(body))
    # Stripe retries with a fresh signature:
    duplicate = await post_webhook(payments, body, signed(body))

    assert first == duplicate == (200, {"received": True})
    [succeeded] = await payments.emitted(PaymentSucceeded.TYPE)
    assert succeeded.correlation_id == order
    assert succeeded.payload == {
        "order_id": order,
        "session_id": session_id,
        "payment_intent_id": "pi_test_123",
        "amount": 2500,
        "currency": "eur",
    }
    row = await stored_session(payments, order)
    assert (row.status, row.payment_intent_id) == ("complete", "pi_test_123")
    [event] = await stored_events(payments)
    assert event.processed_at is not None
    assert event.payload == body.decode()


async def test_payment_succeeded_carries_what_stripe_says_was_paid_not_what_we_expected(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order, amount=3000)  # we asked for 30.00 EUR
    paid = completed(session_id, order, amount=1, currency="usd")
    body = stripe_event("checkout.session.completed", paid)

    assert (await post_webhook(payments, body, signed(body)))[0] == 200

    [succeeded] = await payments.emitted(PaymentSucceeded.TYPE)
    # The saga compares this with the order and refunds a mismatch (machine._on_payment_succeeded).
    assert (succeeded.payload["amount"], succeeded.payload["currency"]) == (1, "usd")


async def test_an_overpaid_session_can_be_refunded_all_that_was_charged(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order, amount=3000)
    body = stripe_event("checkout.session.completed", completed(session_id, order, amount=3001))

    assert (await post_webhook(payments, body, signed(body)))[0] == 200

    # The refund cap is the charge Stripe reported, not the sum we asked for.
    assert (await stored_session(payments, order)).amount_total == 3001
    async with payments.runtime.transaction() as db:
        assert await repository.hold_refund_amount(db, order_id=order, amount=3001)


async def test_a_forged_or_missing_signature_is_refused_and_nothing_is_stored(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    body = stripe_event("checkout.session.completed", completed(session_id, order))
    tampered = body.replace(b'"amount_total": 2500', b'"amount_total": 1')

    results = [
        await post_webhook(payments, body, signed(body, "whsec_someone_else")),
        await post_webhook(payments, tampered, signed(body)),
        await post_webhook(payments, body, None),
        await post_webhook(payments, body, "t=1,v1=deadbeef"),
    ]

    assert {status for status, _ in results} == {400}
    assert {payload["code"] for _, payload in results} == {"invalid_signature"}
    assert await stored_events(payments) == []
    assert await payments.emitted(PaymentSucceeded.TYPE) == []
    assert (await stored_session(payments, order)).status == "open"


async def test_a_signature_older_than_the_tolerance_is_refused(payments: ServiceRig) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    body = stripe_event("checkout.session.completed", completed(session_id, order))

    status, payload = await post_webhook(payments, body, signed(body, at=int(time.time()) - 301))

    assert (status, payload["code"]) == (400, "invalid_signature")


async def test_a_correctly_signed_body_with_our_secret_is_accepted(
    payments: ServiceRig,
) -> None:
    body = stripe_event("customer.created", {"id": "cus_1", "object": "customer"})

    status, _ = await post_webhook(payments, body, signed(body, WEBHOOK_SECRET))

    assert status == 200


async def test_unknown_event_types_are_stored_and_acknowledged(payments: ServiceRig) -> None:
    body = stripe_event("charge.refunded", {"id": "ch_1", "object": "charge"}, event_id="evt_x1")

    assert (await post_webhook(payments, body, signed(body)))[0] == 200

    [event] = await stored_events(payments)
    assert (event.event_id, event.type) == ("evt_x1", "charge.refunded")
    assert await payments.emitted() == []


async def test_an_event_for_an_unknown_session_is_kept_unprocessed(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    body = stripe_event("checkout.session.completed", completed("cs_test_unknown", order))

    assert (await post_webhook(payments, body, signed(body)))[0] == 200

    [event] = await stored_events(payments)
    assert event.processed_at is None
    async with payments.runtime.sessionmaker() as session:
        assert [e.event_id for e in await repository.unprocessed_events(session)] == [
            event.event_id
        ]
    assert await payments.emitted(PaymentSucceeded.TYPE) == []


async def test_a_completed_but_unpaid_session_does_not_succeed_it_is_processing(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    body = stripe_event("checkout.session.completed", completed(session_id, order, paid=False))

    assert (await post_webhook(payments, body, signed(body)))[0] == 200

    # Not a success: the saga hears the money is on its way (issue 14, item 1).
    [pending] = await payments.emitted()
    assert (pending.type, pending.payload["status"]) == ("payments.payment_pending", "processing")
    assert (await stored_session(payments, order)).status == "processing"


async def test_an_expired_session_emits_payment_expired_once(payments: ServiceRig) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    obj = {"id": session_id, "object": "checkout.session", "status": "expired"}
    body = stripe_event("checkout.session.expired", obj)

    await post_webhook(payments, body, signed(body))
    await post_webhook(payments, body, signed(body))

    [expired] = await payments.emitted(PaymentExpired.TYPE)
    assert expired.payload == {"order_id": order, "session_id": session_id}
    assert expired.correlation_id == order
    assert (await stored_session(payments, order)).status == "expired"


async def test_a_session_settles_only_once_whatever_stripe_sends_next(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    paid = stripe_event("checkout.session.completed", completed(session_id, order))
    paid_again = stripe_event(
        "checkout.session.async_payment_succeeded", completed(session_id, order)
    )
    expired = stripe_event("checkout.session.expired", {"id": session_id, "status": "expired"})

    for body in (paid, paid_again, expired):
        assert (await post_webhook(payments, body, signed(body)))[0] == 200

    assert len(await payments.emitted(PaymentSucceeded.TYPE)) == 1
    assert await payments.emitted(PaymentExpired.TYPE) == []
    assert (await stored_session(payments, order)).status == "complete"
    assert all(e.processed_at is not None for e in await stored_events(payments))
