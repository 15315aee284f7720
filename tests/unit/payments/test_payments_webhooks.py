"""The Stripe webhook: signatures verified as Stripe signs them, events stored and applied once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from payments_support import (
    WEBHOOK_SECRET,
    client,
    emitted,
    new_order_id,
    signed,
    stripe_event,
)
from sqlalchemy import select

from services.payments import repository
from services.payments.models import PaymentSession, StripeEvent
from services.payments.stripe_gateway import CheckoutSession
from shared.messages.contracts import PaymentExpired, PaymentSucceeded
from shared.runtime import ServiceRuntime

HOOK = "/webhooks/stripe"


async def open_session(runtime: ServiceRuntime, order_id: str, *, amount: int = 2500) -> str:
    """A stored open session, as CreatePaymentSession leaves it."""
    session_id = f"cs_test_{order_id.replace('-', '')}"
    checkout = CheckoutSession(
        id=session_id,
        url=f"https://checkout.example/{session_id}",
        status="open",
        amount_total=amount,
        currency="eur",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        payment_intent_id=None,
    )
    async with runtime.transaction() as session:
        await repository.add_payment_session(
            session, order_id=order_id, checkout=checkout, trace_id=order_id
        )
    return session_id


def completed(session_id: str, order_id: str, *, amount: int = 2500, paid: bool = True) -> dict:
    return {
        "id": session_id,
        "object": "checkout.session",
        "status": "complete",
        "payment_status": "paid" if paid else "unpaid",
        "amount_total": amount,
        "currency": "eur",
        "payment_intent": "pi_test_123",
        "client_reference_id": order_id,
        "metadata": {"order_id": order_id, "trace_id": order_id},
    }


async def stored_events(runtime: ServiceRuntime) -> list[StripeEvent]:
    async with runtime.sessionmaker() as session:
        return list((await session.execute(select(StripeEvent))).scalars())


async def session_row(runtime: ServiceRuntime, order_id: str) -> PaymentSession:
    async with runtime.sessionmaker() as session:
        row = await session.get(PaymentSession, order_id)
    assert row is not None
    return row


async def post(runtime: ServiceRuntime, body: bytes, signature: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    async with client(runtime) as http:
        response = await http.post(HOOK, content=body, headers=headers)
    return response.status_code, response.json()


async def test_a_paid_session_emits_payment_succeeded_once(payments: ServiceRuntime) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    body = stripe_event("checkout.session.completed", completed(session_id, order))

    first = await post(payments, body, signed(body))
    duplicate = await post(payments, body, signed(body))  # Stripe retries with a fresh signature

    assert first == duplicate == (200, {"received": True})
    [succeeded] = await emitted(payments, PaymentSucceeded.TYPE)
    assert succeeded.correlation_id == order
    assert succeeded.payload == {
        "order_id": order,
        "session_id": session_id,
        "payment_intent_id": "pi_test_123",
        "amount": 2500,
        "currency": "eur",
    }
    row = await session_row(payments, order)
    assert (row.status, row.payment_intent_id) == ("complete", "pi_test_123")
    [event] = await stored_events(payments)
    assert event.processed_at is not None
    assert event.payload == body.decode()


async def test_a_forged_or_missing_signature_is_refused_and_nothing_is_stored(
    payments: ServiceRuntime,
) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    body = stripe_event("checkout.session.completed", completed(session_id, order))
    tampered = body.replace(b'"amount_total": 2500', b'"amount_total": 1')

    results = [
        await post(payments, body, signed(body, "whsec_someone_else")),
        await post(payments, tampered, signed(body)),
        await post(payments, body, None),
        await post(payments, body, "t=1,v1=deadbeef"),
    ]

    assert {status for status, _ in results} == {400}
    assert {payload["code"] for _, payload in results} == {"invalid_signature"}
    assert await stored_events(payments) == []
    assert await emitted(payments, PaymentSucceeded.TYPE) == []
    assert (await session_row(payments, order)).status == "open"


async def test_a_signature_older_than_the_tolerance_is_refused(payments: ServiceRuntime) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    body = stripe_event("checkout.session.completed", completed(session_id, order))

    status, payload = await post(payments, body, signed(body, at=int(time.time()) - 301))

    assert (status, payload["code"]) == (400, "invalid_signature")


async def test_a_correctly_signed_body_with_our_secret_is_accepted(
    payments: ServiceRuntime,
) -> None:
    body = stripe_event("customer.created", {"id": "cus_1", "object": "customer"})

    status, _ = await post(payments, body, signed(body, WEBHOOK_SECRET))

    assert status == 200


async def test_unknown_event_types_are_stored_and_acknowledged(payments: ServiceRuntime) -> None:
    body = stripe_event("charge.refunded", {"id": "ch_1", "object": "charge"}, event_id="evt_x1")

    assert (await post(payments, body, signed(body)))[0] == 200

    [event] = await stored_events(payments)
    assert (event.event_id, event.type) == ("evt_x1", "charge.refunded")
    assert await emitted(payments) == []


async def test_an_event_for_an_unknown_session_is_kept_unprocessed(
    payments: ServiceRuntime,
) -> None:
    order = new_order_id()
    body = stripe_event("checkout.session.completed", completed("cs_test_unknown", order))

    assert (await post(payments, body, signed(body)))[0] == 200

    [event] = await stored_events(payments)
    assert event.processed_at is None
    async with payments.sessionmaker() as session:
        assert [e.event_id for e in await repository.unprocessed_events(session)] == [
            event.event_id
        ]
    assert await emitted(payments, PaymentSucceeded.TYPE) == []


async def test_a_completed_but_unpaid_session_does_not_succeed(payments: ServiceRuntime) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    body = stripe_event("checkout.session.completed", completed(session_id, order, paid=False))

    assert (await post(payments, body, signed(body)))[0] == 200

    assert await emitted(payments) == []
    assert (await session_row(payments, order)).status == "processing"


async def test_an_expired_session_emits_payment_expired_once(payments: ServiceRuntime) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    obj = {"id": session_id, "object": "checkout.session", "status": "expired"}
    body = stripe_event("checkout.session.expired", obj)

    await post(payments, body, signed(body))
    await post(payments, body, signed(body))

    [expired] = await emitted(payments, PaymentExpired.TYPE)
    assert expired.payload == {"order_id": order, "session_id": session_id}
    assert expired.correlation_id == order
    assert (await session_row(payments, order)).status == "expired"


async def test_a_session_settles_only_once_whatever_stripe_sends_next(
    payments: ServiceRuntime,
) -> None:
    order = new_order_id()
    session_id = await open_session(payments, order)
    paid = stripe_event("checkout.session.completed", completed(session_id, order))
    paid_again = stripe_event(
        "checkout.session.async_payment_succeeded", completed(session_id, order)
    )
    expired = stripe_event("checkout.session.expired", {"id": session_id, "status": "expired"})

    for body in (paid, paid_again, expired):
        assert (await post(payments, body, signed(body)))[0] == 200

    assert len(await emitted(payments, PaymentSucceeded.TYPE)) == 1
    assert await emitted(payments, PaymentExpired.TYPE) == []
    assert (await session_row(payments, order)).status == "complete"
    assert all(e.processed_at is not None for e in await stored_events(payments))
