"""Webhook events arriving together share one transaction: each still stored once, applied once,
and answered only after the commit; one event that cannot be applied holds up no other."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from services.payments import stripe_events
from services.payments.webhooks import intake_of
from shared.messages.contracts import PaymentSucceeded
from tests.support.payments import (
    completed,
    open_session,
    post_webhook,
    stored_events,
    stored_session,
)
from tests.support.rig import ServiceRig, new_order_id
from tests.support.stripe_sim import signed, stripe_event


async def deliver_together(payments: ServiceRig, *bodies: bytes) -> list[bool]:
    """Hands the events to the intake in one go, as concurrent requests do: one batch."""
    intake = intake_of(payments.runtime)
    return list(
        await asyncio.gather(*(intake.store(json.loads(body), body.decode()) for body in bodies))
    )


async def test_a_batch_stores_each_event_once_and_applies_each_once(
    payments: ServiceRig,
) -> None:
    orders = [new_order_id(), new_order_id()]
    sessions = [await open_session(payments, order) for order in orders]
    first, second = (
        stripe_event("checkout.session.completed", completed(s, o))
        for s, o in zip(sessions, orders, strict=True)
    )

    outcomes = await deliver_together(payments, first, first, second, first)

    assert outcomes == [True, False, True, False]  # redeliveries in the same batch: duplicates
    events = await stored_events(payments)
    assert len(events) == 2 and all(e.processed_at is not None for e in events)
    succeeded = await payments.emitted(PaymentSucceeded.TYPE)
    assert sorted(e.payload["order_id"] for e in succeeded) == sorted(orders)
    assert [(await stored_session(payments, o)).status for o in orders] == ["complete"] * 2


async def test_concurrent_requests_are_all_answered_after_their_event_is_stored(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    body = stripe_event("checkout.session.completed", completed(session_id, order))
    others = [stripe_event("customer.created", {"id": f"cus_{i}"}) for i in range(5)]

    answers = await asyncio.gather(
        *(post_webhook(payments, b, signed(b)) for b in [body, body, *others])
    )

    assert {status for status, _ in answers} == {200}
    assert len(await stored_events(payments)) == 6
    assert len(await payments.emitted(PaymentSucceeded.TYPE)) == 1


async def test_an_event_whose_effect_fails_is_kept_for_replay_and_the_rest_are_applied(
    payments: ServiceRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    good_order, bad_order = new_order_id(), new_order_id()
    good = await open_session(payments, good_order)
    bad = await open_session(payments, bad_order)
    real_apply = stripe_events.apply_event

    async def failing_for_bad(session: Any, outbox: Any, event: dict[str, Any]) -> bool:
        if stripe_events.object_id_of(event) == bad:
            raise RuntimeError("boom")
        return await real_apply(session, outbox, event)

    monkeypatch.setattr(stripe_events, "apply_event", failing_for_bad)
    bodies = [
        stripe_event("checkout.session.completed", completed(good, good_order)),
        stripe_event("checkout.session.completed", completed(bad, bad_order)),
    ]

    assert await deliver_together(payments, *bodies) == [True, True]

    processed = {e.object_id: e.processed_at is not None for e in await stored_events(payments)}
    assert processed == {good: True, bad: False}
    [succeeded] = await payments.emitted(PaymentSucceeded.TYPE)
    assert succeeded.payload["order_id"] == good_order
    assert (await stored_session(payments, bad_order)).status == "open"


async def test_an_event_for_a_session_that_cannot_move_is_stored_as_processed(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    paid = stripe_event("checkout.session.completed", completed(session_id, order))
    late = stripe_event("checkout.session.async_payment_succeeded", completed(session_id, order))
    unknown = stripe_event("checkout.session.completed", completed("cs_test_nowhere", order))
    await deliver_together(payments, paid)

    assert await deliver_together(payments, late, unknown) == [True, True]

    processed = {e.object_id: e.processed_at is not None for e in await stored_events(payments)}
    assert processed == {session_id: True, "cs_test_nowhere": False}
    assert len(await payments.emitted(PaymentSucceeded.TYPE)) == 1
