"""Delayed payments, out-of-order events and events that came before their session row: what the
webhook, the background replay and the operator's replay make of them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from services.payments.bootstrap import build
from services.payments.models import StripeEvent
from shared.messages.contracts import PaymentExpired, PaymentFailed, PaymentSucceeded
from tests.support.payments import open_session, payments_settings, post_webhook, stored_session
from tests.support.rig import ServiceRig, as_user, new_order_id, sqlite_url
from tests.support.stripe_sim import signed, stripe_event


def session_obj(
    session_id: str, order_id: str, payment_status: str, status: str = "complete"
) -> dict[str, Any]:
    return {
        "id": session_id,
        "object": "checkout.session",
        "status": status,
        "payment_status": payment_status,
        "amount_total": 4200,
        "currency": "eur",
        "payment_intent": "pi_test_delayed",
        "metadata": {"order_id": order_id},
    }


async def post_event(payments: ServiceRig, event_type: str, obj: dict[str, Any]) -> str:
    """Posts a correctly signed event to the webhook; returns its id."""
    body = stripe_event(event_type, obj)
    status, answer = await post_webhook(payments, body, signed(body))
    assert status == 200, answer
    return str(json.loads(body)["id"])


async def status_of(payments: ServiceRig, order_id: str) -> str:
    return (await stored_session(payments, order_id)).status


async def unprocessed(payments: ServiceRig) -> list[str]:
    stmt = select(StripeEvent.event_id).where(StripeEvent.processed_at.is_(None))
    async with payments.runtime.sessionmaker() as session:
        return list((await session.execute(stmt)).scalars())


async def test_a_delayed_payment_waits_in_processing_then_succeeds_once(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    sid = await open_session(payments, order, amount=4200)

    await post_event(payments, "checkout.session.completed", session_obj(sid, order, "unpaid"))
    assert await status_of(payments, order) == "processing"
    # Before: nothing was said, and the saga's session deadline compensated a bank debit that
    # settles days later. Now the saga hears the payment is processing, once.
    [pending] = await payments.emitted()
    assert pending.payload == {"order_id": order, "session_id": sid, "status": "processing"}

    paid = session_obj(sid, order, "paid")
    await post_event(payments, "checkout.session.async_payment_succeeded", paid)
    await post_event(payments, "checkout.session.async_payment_succeeded", paid)  # a second event

    [succeeded] = await payments.emitted(PaymentSucceeded.TYPE)
    assert succeeded.payload == {
        "order_id": order,
        "session_id": sid,
        "payment_intent_id": "pi_test_delayed",
        "amount": 4200,
        "currency": "eur",
    }
    assert await status_of(payments, order) == "complete"
    assert await unprocessed(payments) == []


async def test_a_delayed_payment_that_fails_emits_payment_failed_with_a_reason(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    sid = await open_session(payments, order, amount=4200)

    await post_event(payments, "checkout.session.completed", session_obj(sid, order, "unpaid"))
    await post_event(
        payments, "checkout.session.async_payment_failed", session_obj(sid, order, "unpaid")
    )
    # A late "succeeded" for the same session cannot undo the failure.
    await post_event(
        payments, "checkout.session.async_payment_succeeded", session_obj(sid, order, "paid")
    )

    [failed] = await payments.emitted(PaymentFailed.TYPE)
    assert failed.payload["order_id"] == order and failed.payload["session_id"] == sid
    assert "async_payment_failed" in failed.payload["reason"]
    assert failed.correlation_id == order
    assert await payments.emitted(PaymentSucceeded.TYPE) == []
    assert await status_of(payments, order) == "failed"


async def test_events_arriving_newest_first_never_move_a_session_backwards(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    sid = await open_session(payments, order, amount=4200)

    await post_event(
        payments, "checkout.session.async_payment_succeeded", session_obj(sid, order, "paid")
    )
    await post_event(payments, "checkout.session.completed", session_obj(sid, order, "unpaid"))
    expired = session_obj(sid, order, "unpaid", status="expired")
    await post_event(payments, "checkout.session.expired", expired)

    assert await status_of(payments, order) == "complete"
    assert len(await payments.emitted(PaymentSucceeded.TYPE)) == 1
    assert await payments.emitted(PaymentExpired.TYPE) == []
    assert await unprocessed(payments) == []  # stored and ignored, not left for replay


async def test_an_event_before_its_session_row_is_applied_by_the_background_replay(
    tmp_path: Path,
) -> None:
    settings = payments_settings(
        sqlite_url(tmp_path / "payments.db"), stripe_event_retry_seconds=0.05
    )
    payments = await ServiceRig.start(build, settings)
    try:
        order = new_order_id()
        sid = f"cs_test_{order.replace('-', '')}"
        event_id = await post_event(
            payments, "checkout.session.completed", session_obj(sid, order, "paid")
        )
        assert await unprocessed(payments) == [event_id]
        await asyncio.sleep(0.2)
        assert await payments.emitted() == []  # still nothing to apply it to

        await open_session(payments, order, amount=4200)
        for _ in range(100):
            if await payments.emitted(PaymentSucceeded.TYPE):
                break
            await asyncio.sleep(0.02)
    finally:
        await payments.stop()
    [succeeded] = await payments.emitted(PaymentSucceeded.TYPE)
    assert succeeded.payload["session_id"] == sid
    assert await unprocessed(payments) == []


async def test_the_operator_replays_stored_events_on_demand(payments: ServiceRig) -> None:
    order = new_order_id()
    sid = f"cs_test_{order.replace('-', '')}"
    early = await post_event(
        payments, "checkout.session.completed", session_obj(sid, order, "paid")
    )
    orphan = await post_event(
        payments, "checkout.session.expired", session_obj("cs_test_never", order, "unpaid")
    )
    await open_session(payments, order, amount=4200)

    http = payments.http
    refused = await http.post("/operator/stripe-events/replay", headers=as_user("shopper"))
    replayed = await http.post(
        "/operator/stripe-events/replay", headers=as_user("ops", operator=True)
    )
    again = await http.post(
        "/operator/stripe-events/replay",
        json={"event_ids": [early, "evt_unknown"]},
        headers=as_user("ops", operator=True),
    )

    assert refused.status_code == 403
    assert replayed.status_code == 200
    assert replayed.json() == {"applied": [early], "unprocessed": [orphan], "missing": []}
    # Applying an applied event again changes nothing: the session only moves forward.
    assert again.json() == {"applied": [early], "unprocessed": [], "missing": ["evt_unknown"]}
    assert len(await payments.emitted(PaymentSucceeded.TYPE)) == 1
    assert await unprocessed(payments) == [orphan]
