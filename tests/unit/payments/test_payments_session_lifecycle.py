"""Delayed payments, out-of-order events and events that came before their session row: what the
webhook, the background replay and the operator's replay make of them."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from payments_support import bearer, client, emitted, new_order_id, payments_settings, signed
from payments_support import stripe_event as event_body
from sqlalchemy import select

from services.payments import repository
from services.payments.bootstrap import build
from services.payments.models import PaymentSession, StripeEvent
from services.payments.stripe_gateway import CheckoutSession
from shared.memory_bus import MemoryBus
from shared.messages.contracts import PaymentExpired, PaymentFailed, PaymentSucceeded
from shared.runtime import ServiceRuntime


def checkout(session_id: str, *, amount: int = 4200) -> CheckoutSession:
    return CheckoutSession(
        id=session_id,
        url=f"https://checkout.example/{session_id}",
        status="open",
        amount_total=amount,
        currency="eur",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        payment_intent_id=None,
    )


async def store_session(runtime: ServiceRuntime, order_id: str) -> str:
    session_id = f"cs_test_{order_id.replace('-', '')}"
    async with runtime.transaction() as session:
        await repository.add_payment_session(
            session, order_id=order_id, checkout=checkout(session_id), trace_id=order_id
        )
    return session_id


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


async def deliver(runtime: ServiceRuntime, event_type: str, obj: dict[str, Any]) -> str:
    """Posts a correctly signed event to the webhook; returns its id."""
    body = event_body(event_type, obj)
    async with client(runtime) as http:
        response = await http.post(
            "/webhooks/stripe", content=body, headers={"Stripe-Signature": signed(body)}
        )
    assert response.status_code == 200, response.text
    return str(json.loads(body)["id"])


async def status_of(runtime: ServiceRuntime, order_id: str) -> str:
    async with runtime.sessionmaker() as session:
        row = await session.get(PaymentSession, order_id)
    assert row is not None
    return row.status


async def unprocessed(runtime: ServiceRuntime) -> list[str]:
    stmt = select(StripeEvent.event_id).where(StripeEvent.processed_at.is_(None))
    async with runtime.sessionmaker() as session:
        return list((await session.execute(stmt)).scalars())


async def test_a_delayed_payment_waits_in_processing_then_succeeds_once(
    payments: ServiceRuntime,
) -> None:
    order = new_order_id()
    sid = await store_session(payments, order)

    await deliver(payments, "checkout.session.completed", session_obj(sid, order, "unpaid"))
    assert await status_of(payments, order) == "processing"
    assert await emitted(payments) == []

    paid = session_obj(sid, order, "paid")
    await deliver(payments, "checkout.session.async_payment_succeeded", paid)
    await deliver(payments, "checkout.session.async_payment_succeeded", paid)  # a second event

    [succeeded] = await emitted(payments, PaymentSucceeded.TYPE)
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
    payments: ServiceRuntime,
) -> None:
    order = new_order_id()
    sid = await store_session(payments, order)

    await deliver(payments, "checkout.session.completed", session_obj(sid, order, "unpaid"))
    await deliver(
        payments, "checkout.session.async_payment_failed", session_obj(sid, order, "unpaid")
    )
    # A late "succeeded" for the same session cannot undo the failure.
    await deliver(
        payments, "checkout.session.async_payment_succeeded", session_obj(sid, order, "paid")
    )

    [failed] = await emitted(payments, PaymentFailed.TYPE)
    assert failed.payload["order_id"] == order and failed.payload["session_id"] == sid
    assert "async_payment_failed" in failed.payload["reason"]
    assert failed.correlation_id == order
    assert await emitted(payments, PaymentSucceeded.TYPE) == []
    assert await status_of(payments, order) == "failed"


async def test_events_arriving_newest_first_never_move_a_session_backwards(
    payments: ServiceRuntime,
) -> None:
    order = new_order_id()
    sid = await store_session(payments, order)

    await deliver(
        payments, "checkout.session.async_payment_succeeded", session_obj(sid, order, "paid")
    )
    await deliver(payments, "checkout.session.completed", session_obj(sid, order, "unpaid"))
    expired = session_obj(sid, order, "unpaid", status="expired")
    await deliver(payments, "checkout.session.expired", expired)

    assert await status_of(payments, order) == "complete"
    assert len(await emitted(payments, PaymentSucceeded.TYPE)) == 1
    assert await emitted(payments, PaymentExpired.TYPE) == []
    assert await unprocessed(payments) == []  # stored and ignored, not left for replay


async def test_an_event_before_its_session_row_is_applied_by_the_background_replay(
    tmp_path: Path,
) -> None:
    settings = payments_settings(tmp_path, stripe_event_retry_seconds=0.05)
    runtime = build(settings, bus=MemoryBus(), auto_migrate=True)
    await runtime.start()
    try:
        order = new_order_id()
        sid = f"cs_test_{order.replace('-', '')}"
        event_id = await deliver(
            runtime, "checkout.session.completed", session_obj(sid, order, "paid")
        )
        assert await unprocessed(runtime) == [event_id]
        await asyncio.sleep(0.2)
        assert await emitted(runtime) == []  # still nothing to apply it to

        await store_session(runtime, order)
        for _ in range(100):
            if await emitted(runtime, PaymentSucceeded.TYPE):
                break
            await asyncio.sleep(0.02)
    finally:
        await runtime.stop()
    [succeeded] = await emitted(runtime, PaymentSucceeded.TYPE)
    assert succeeded.payload["session_id"] == sid
    assert await unprocessed(runtime) == []


async def test_the_operator_replays_stored_events_on_demand(payments: ServiceRuntime) -> None:
    order = new_order_id()
    sid = f"cs_test_{order.replace('-', '')}"
    early = await deliver(payments, "checkout.session.completed", session_obj(sid, order, "paid"))
    orphan = await deliver(
        payments, "checkout.session.expired", session_obj("cs_test_never", order, "unpaid")
    )
    await store_session(payments, order)

    async with client(payments) as http:
        refused = await http.post("/operator/stripe-events/replay", headers=bearer("shopper"))
        replayed = await http.post(
            "/operator/stripe-events/replay", headers=bearer("ops", operator=True)
        )
        again = await http.post(
            "/operator/stripe-events/replay",
            json={"event_ids": [early, "evt_unknown"]},
            headers=bearer("ops", operator=True),
        )

    assert refused.status_code == 403
    assert replayed.status_code == 200
    assert replayed.json() == {"applied": [early], "unprocessed": [orphan], "missing": []}
    # Applying an applied event again changes nothing: the session only moves forward.
    assert again.json() == {"applied": [early], "unprocessed": [], "missing": ["evt_unknown"]}
    assert len(await emitted(payments, PaymentSucceeded.TYPE)) == 1
    assert await unprocessed(payments) == [orphan]
