"""InquirePayment: the saga asks at its payment deadline instead of compensating on silence, and
payments answers with the truth — from the session row, or from Stripe (the simulator, through
the real SDK) when the row still waits because a webhook was lost. Webhooks the simulator sends
are never forwarded here unless a test says so."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.payments import repository
from services.payments.stripe_gateway import StripeCallFailed, StripeGateway
from shared.delivery import Outcome, deliver
from shared.messages import Envelope
from shared.messages.contracts import (
    InquirePayment,
    PaymentExpired,
    PaymentFailed,
    PaymentPending,
    PaymentSucceeded,
)
from tests.support.payments import (
    completed,
    create_command,
    forward,
    inquire,
    inquiry_answers,
    open_session,
    post_webhook,
    send_create,
    stored_session,
)
from tests.support.rig import ServiceRig, new_order_id
from tests.support.stripe_sim import (
    Sim,
    retrieve,
    signed,
    stripe_event,
    webhooks_of,
    with_answer_held,
)


async def webhook(payments: ServiceRig, event_type: str, obj: dict[str, Any]) -> None:
    body = stripe_event(event_type, obj)
    assert (await post_webhook(payments, body, signed(body)))[0] == 200


@contextmanager
def stripe_clock_behind(sim: Sim, by: timedelta) -> Iterator[None]:
    """Stripe's clock behind ours (or its expiry sweep lagging): a session past its expires_at
    by our clock is still open at Stripe. The module's simulator is shared: put it back."""
    sim.clock.offset -= by.total_seconds()
    try:
        yield
    finally:
        sim.clock.offset += by.total_seconds()


async def session_due_at_stripe(payments: ServiceRig) -> tuple[str, str]:
    """An order whose open session expired a few minutes ago by our clock, while Stripe (its
    clock behind, see stripe_clock_behind) still offers it: (order, session id)."""
    gateway: StripeGateway = payments.runtime.deps.stripe
    order = new_order_id()
    command = create_command(order)
    checkout = await gateway.create_checkout_session(
        order_id=order,
        currency=command.currency,
        lines=command.lines,
        expires_at=datetime.now(UTC) - timedelta(minutes=5),
        success_url="http://shop/ok",
        cancel_url="http://shop/cancel",
        metadata={"order_id": order},
    )
    async with payments.runtime.transaction() as db:
        await repository.add_payment_session(db, order_id=order, checkout=checkout, trace_id=order)
    return order, checkout.id


# --- answered from the row -------------------------------------------------------------------


async def test_a_paid_session_is_announced_again_with_the_charge_stored_for_it(
    payments: ServiceRig,
) -> None:
    # `payments` reaches no Stripe: a row that holds the outcome is answered from the row alone.
    order = new_order_id()
    session_id = await open_session(payments, order, amount=2500)
    await webhook(payments, "checkout.session.completed", completed(session_id, order, amount=2600))

    await inquire(payments, order)

    paid = {
        "order_id": order,
        "session_id": session_id,
        "payment_intent_id": "pi_test_123",
        "amount": 2600,  # what Stripe charged, as stored, not the 2500 asked for
        "currency": "eur",
    }
    assert await inquiry_answers(payments, order) == [
        (PaymentSucceeded.TYPE, paid),
        (PaymentSucceeded.TYPE, paid),  # the saga ignores the second copy
    ]


async def test_a_failed_delayed_payment_is_announced_failed_again(payments: ServiceRig) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    unpaid = completed(session_id, order, paid=False)
    await webhook(payments, "checkout.session.completed", unpaid)
    await webhook(payments, "checkout.session.async_payment_failed", unpaid)

    await inquire(payments, order)

    # The row keeps no reason: the one it knows for every failed session is said again.
    [(processing, _), (_, webhooks), (kind, again)] = await inquiry_answers(payments, order)
    assert processing == PaymentPending.TYPE  # the unpaid completion said so at the time
    assert kind == PaymentFailed.TYPE
    assert (again["order_id"], again["session_id"]) == (order, session_id)
    assert webhooks["reason"].startswith("delayed payment failed")
    assert again["reason"].startswith("delayed payment failed")


async def test_an_expired_session_is_announced_expired_again(payments: ServiceRig) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    await webhook(payments, "checkout.session.expired", {"id": session_id, "status": "expired"})

    await inquire(payments, order)

    expired = {"order_id": order, "session_id": session_id}
    assert await inquiry_answers(payments, order) == [
        (PaymentExpired.TYPE, expired),
        (PaymentExpired.TYPE, expired),
    ]


async def test_an_order_without_a_session_row_yet_is_answered_pending(
    payments: ServiceRig,
) -> None:
    # Its CreatePaymentSession is still in a retry queue: the saga must keep waiting for it.
    order = new_order_id()

    await inquire(payments, order)

    assert await inquiry_answers(payments, order) == [
        (PaymentPending.TYPE, {"order_id": order, "session_id": None, "status": "no_session"})
    ]


# --- the row still waits: Stripe is asked ----------------------------------------------------


async def test_a_payment_whose_webhook_was_lost_is_settled_by_the_inquiry_and_announced(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order = str(uuid.uuid4())
    session_id = await send_create(payments_on_sim, order)
    # The shopper's total changed on the hosted page: Stripe charged 3100, not the 2999 asked.
    paid = await stripe_sim.control(f"sessions/{session_id}/pay", {"amount_total": 3100})
    intent = paid["data"]["object"]["payment_intent"]

    await inquire(payments_on_sim, order)
    # The lost webhook turns up after all, and the saga asks once more.
    await forward(
        payments_on_sim, await webhooks_of(stripe_sim, "checkout.session.completed", session_id)
    )
    await inquire(payments_on_sim, order)

    succeeded = {
        "order_id": order,
        "session_id": session_id,
        "payment_intent_id": intent,
        "amount": 3100,
        "currency": "eur",
    }
    assert await inquiry_answers(payments_on_sim, order) == [
        (PaymentSucceeded.TYPE, succeeded),
        (PaymentSucceeded.TYPE, succeeded),
    ]
    row = await stored_session(payments_on_sim, order)
    assert (row.status, row.payment_intent_id, row.amount_total) == ("complete", intent, 3100)


async def test_a_session_stripe_has_expired_is_settled_expired(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order = str(uuid.uuid4())
    session_id = await send_create(payments_on_sim, order)
    await stripe_sim.control(f"sessions/{session_id}/expire_now")

    await inquire(payments_on_sim, order)

    assert await inquiry_answers(payments_on_sim, order) == [
        (PaymentExpired.TYPE, {"order_id": order, "session_id": session_id})
    ]
    assert (await stored_session(payments_on_sim, order)).status == "expired"


async def test_an_unpaid_session_past_its_expiry_is_expired_at_stripe_then_answered_expired(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    with stripe_clock_behind(stripe_sim, timedelta(hours=2)):
        order, session_id = await session_due_at_stripe(payments_on_sim)
        assert (await retrieve(stripe_sim, session_id)).status == "open"

        await inquire(payments_on_sim, order)

        at_stripe = await retrieve(stripe_sim, session_id)
    assert at_stripe.status == "expired"  # closed by us: nobody can pay it any more
    assert await inquiry_answers(payments_on_sim, order) == [
        (PaymentExpired.TYPE, {"order_id": order, "session_id": session_id})
    ]
    assert (await stored_session(payments_on_sim, order)).status == "expired"


async def test_a_shopper_paying_while_the_inquiry_closes_the_session_is_answered_paid(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    with stripe_clock_behind(stripe_sim, timedelta(hours=2)):
        order, session_id = await session_due_at_stripe(payments_on_sim)
        # Stripe's answer "open" is in flight when the shopper pays.
        asking = await with_answer_held(
            stripe_sim,
            inquire(payments_on_sim, order),
            method="GET",
            path_prefix=f"/v1/checkout/sessions/{session_id}",
        )
        await stripe_sim.control(f"sessions/{session_id}/pay")

        await asking

    # Stripe refused to expire a paid session; asked again, it said paid.
    [(kind, payload)] = await inquiry_answers(payments_on_sim, order)
    assert (kind, payload["amount"]) == (PaymentSucceeded.TYPE, 2999)
    assert (await stored_session(payments_on_sim, order)).status == "complete"


async def test_a_session_still_open_before_its_expiry_is_answered_pending(
    payments_on_sim: ServiceRig,
) -> None:
    order = str(uuid.uuid4())
    session_id = await send_create(payments_on_sim, order)

    await inquire(payments_on_sim, order)

    assert await inquiry_answers(payments_on_sim, order) == [
        (PaymentPending.TYPE, {"order_id": order, "session_id": session_id, "status": "open"})
    ]
    assert (await stored_session(payments_on_sim, order)).status == "open"


async def test_a_delayed_payment_is_answered_pending_until_its_money_arrives(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order = str(uuid.uuid4())
    session_id = await send_create(payments_on_sim, order)
    await stripe_sim.control(f"sessions/{session_id}/pay", {"payment_method": "delayed"})

    await inquire(payments_on_sim, order)
    status_meanwhile = (await stored_session(payments_on_sim, order)).status
    await stripe_sim.control(f"sessions/{session_id}/async_result", {"outcome": "succeeded"})
    await inquire(payments_on_sim, order)

    pending = {"order_id": order, "session_id": session_id, "status": "processing"}
    # The inquiry finds the session processing: the move there is said once, as the answer.
    [first, (kind, paid)] = await inquiry_answers(payments_on_sim, order)
    assert first == (PaymentPending.TYPE, pending)
    assert status_meanwhile == "processing"
    assert (kind, paid["amount"]) == (PaymentSucceeded.TYPE, 2999)


# --- Stripe does not answer ------------------------------------------------------------------


async def test_a_transient_stripe_error_leaves_the_inquiry_to_be_retried(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order = str(uuid.uuid4())
    session_id = await send_create(payments_on_sim, order)
    await stripe_sim.control(f"sessions/{session_id}/pay")
    # Every attempt the gateway makes (stripe_max_attempts=2 in the test settings) gets a 500.
    burst = {"method": "GET", "path_prefix": "/v1/checkout/sessions/", "count": 2, "status": 500}
    await stripe_sim.control("faults", {"api_errors": [burst]})
    envelope = Envelope.wrap(InquirePayment(order_id=order), correlation_id=order)
    try:
        with pytest.raises(StripeCallFailed) as raised:
            await payments_on_sim.redeliver(envelope)
        nothing_yet = await inquiry_answers(payments_on_sim, order)
        await stripe_sim.control("faults", {"api_errors": [burst]})
        verdict = await deliver(envelope.to_bytes(), payments_on_sim.runtime.dispatcher)
    finally:
        await stripe_sim.control("faults", {"api_errors": []})

    assert raised.value.transient
    assert verdict.outcome is Outcome.RETRY  # never dead-lettered
    assert nothing_yet == []
    assert (await stored_session(payments_on_sim, order)).status == "open"

    await payments_on_sim.redeliver(envelope)  # the bus's retry, once Stripe answers again

    [(kind, _)] = await inquiry_answers(payments_on_sim, order)
    assert kind == PaymentSucceeded.TYPE


async def test_a_session_stripe_refuses_to_show_dead_letters_the_inquiry(
    payments_on_sim: ServiceRig,
) -> None:
    # A stored session id Stripe has never heard of: 404, which no retry changes.
    order = new_order_id()
    await open_session(payments_on_sim, order)
    envelope = Envelope.wrap(InquirePayment(order_id=order), correlation_id=order)

    verdict = await deliver(envelope.to_bytes(), payments_on_sim.runtime.dispatcher)

    assert verdict.outcome is Outcome.DEAD
    assert verdict.reason.startswith("InquiryRefused: stripe refused to show cs_test_")
    assert await inquiry_answers(payments_on_sim, order) == []
