"""The payments service on the one rig: its settings (with or without the Stripe simulator),
stored Checkout Sessions, and webhooks posted to it as Stripe posts them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from services.payments import repository
from services.payments.models import PaymentSession, StripeEvent
from services.payments.settings import PaymentsSettings
from services.payments.stripe_gateway import CheckoutSession
from shared.messages import Envelope
from shared.messages.contracts import (
    CreatePaymentSession,
    InquirePayment,
    PaymentExpired,
    PaymentFailed,
    PaymentLine,
    PaymentPending,
    PaymentSucceeded,
)
from tests.support.rig import ServiceRig, new_order_id, settings_for
from tests.support.stripe_sim import API_KEY, WEBHOOK_SECRET, Delivery, Sim, webhooks_of

WEBHOOK_PATH = "/webhooks/stripe"
# What payments may answer the saga's InquirePayment with.
INQUIRY_ANSWERS = (
    PaymentSucceeded.TYPE,
    PaymentFailed.TYPE,
    PaymentExpired.TYPE,
    PaymentPending.TYPE,
)


def payments_settings(database_url: str, **overrides: Any) -> PaymentsSettings:
    """Stripe's key and webhook secret are the simulator harness's, so events signed by the
    simulator or by `stripe_sim.signed` are accepted."""
    values: dict[str, Any] = {
        "stripe_api_key": API_KEY,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        # Nothing listens here: a test that reaches Stripe by accident fails fast.
        "stripe_api_base": "http://127.0.0.1:9",
        "stripe_max_attempts": 2,
        "stripe_retry_base_seconds": 0.01,
        "log_json": False,
        **overrides,
    }
    return settings_for(PaymentsSettings, database_url, **values)


def settings_on_sim(database_url: str, sim: Sim, **overrides: Any) -> PaymentsSettings:
    """Payments' test settings pointed at this simulator."""
    return payments_settings(database_url, stripe_api_base=sim.url, **overrides)


def create_command(
    order_id: str, *, expires_in: timedelta = timedelta(hours=2)
) -> CreatePaymentSession:
    """The saga's command for an order of EUR 29.99 in two lines."""
    return CreatePaymentSession(
        order_id=order_id,
        user_id="shopper-1",
        currency="EUR",
        amount_total=2 * 1250 + 499,
        lines=(
            PaymentLine(name="Server plan S", quantity=2, unit_amount=1250),
            PaymentLine(name="Setup job", quantity=1, unit_amount=499),
        ),
        expires_at=datetime.now(UTC) + expires_in,
    )


async def open_session(payments: ServiceRig, order_id: str, *, amount: int = 2500) -> str:
    """A stored open session, as CreatePaymentSession leaves it (Stripe never asked); its id."""
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
    async with payments.runtime.transaction() as db:
        await repository.add_payment_session(
            db, order_id=order_id, checkout=checkout, trace_id=order_id
        )
    return session_id


def completed(
    session_id: str,
    order_id: str,
    *,
    amount: int = 2500,
    currency: str = "eur",
    paid: bool = True,
) -> dict[str, Any]:
    """The Checkout Session object of a `checkout.session.completed` event."""
    return {
        "id": session_id,
        "object": "checkout.session",
        "status": "complete",
        "payment_status": "paid" if paid else "unpaid",
        "amount_total": amount,
        "currency": currency,
        "payment_intent": "pi_test_123",
        "client_reference_id": order_id,
        "metadata": {"order_id": order_id, "trace_id": order_id},
    }


async def stored_session(payments: ServiceRig, order_id: str) -> PaymentSession:
    async with payments.runtime.sessionmaker() as db:
        row = await db.get(PaymentSession, order_id)
    assert row is not None, f"no payment session for {order_id}"
    return row


async def stored_events(payments: ServiceRig) -> list[StripeEvent]:
    async with payments.runtime.sessionmaker() as db:
        return list((await db.scalars(select(StripeEvent))).all())


async def post_webhook(
    payments: ServiceRig, body: bytes, signature: str | None
) -> tuple[int, dict[str, Any]]:
    """POSTs an event body to the webhook endpoint; the status and the JSON answer."""
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    response = await payments.http.post(WEBHOOK_PATH, content=body, headers=headers)
    return response.status_code, response.json()


async def forward(payments: ServiceRig, deliveries: Iterable[Delivery]) -> None:
    """Hands what the simulator sent to our webhook endpoint, bytes and signature unchanged."""
    for delivery in deliveries:
        hook = await payments.http.post(
            WEBHOOK_PATH, content=delivery.body, headers={"Stripe-Signature": delivery.signature}
        )
        assert hook.status_code == 200, hook.text


async def send_create(payments: ServiceRig, order_id: str) -> str:
    """Opens the order's Checkout Session at the simulator; its session id."""
    await payments.deliver(create_command(order_id), correlation_id=order_id)
    return (await stored_session(payments, order_id)).session_id


async def paid_order(payments: ServiceRig, sim: Sim) -> tuple[str, str, str]:
    """An order paid by card at the simulator, its webhook delivered: (order, session, intent)."""
    order = new_order_id()
    session_id = await send_create(payments, order)
    paid = await sim.control(f"sessions/{session_id}/pay")
    await forward(payments, await webhooks_of(sim, "checkout.session.completed", session_id))
    intent = paid["data"]["object"]["payment_intent"]
    assert (await stored_session(payments, order)).status == "complete"
    return order, session_id, str(intent)


async def inquire(payments: ServiceRig, order_id: str) -> Envelope:
    """The saga's question at its payment deadline: what became of this order's payment?"""
    return await payments.deliver(InquirePayment(order_id=order_id), correlation_id=order_id)


async def inquiry_answers(payments: ServiceRig, order_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every payment outcome or PaymentPending emitted for the order, oldest first, as (type,
    payload): whichever path emitted it (webhook, reconciler, inquiry)."""
    emitted = await payments.emitted(correlation_id=order_id)
    return [(e.type, e.payload) for e in emitted if e.type in INQUIRY_ANSWERS]
