"""The payments service on the one rig: its settings (with or without the Stripe simulator),
stored Checkout Sessions, and webhooks posted to it as Stripe posts them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import stripe
from sqlalchemy import select, text

from services.payments import repository
from services.payments.models import PaymentSession, Refund, StripeEvent
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
    PaymentRefunded,
    PaymentSucceeded,
    RefundFailed,
    RefundPayment,
)
from tests.support.rig import ServiceRig, as_user, new_order_id, settings_for
from tests.support.stripe_sim import API_KEY, WEBHOOK_SECRET, Delivery, Sim, webhooks_of

T = TypeVar("T")
WEBHOOK_PATH = "/webhooks/stripe"
# Payments requires a success page outside demo mode; this is the one of the tests' settings.
TEST_SUCCESS_URL = (
    "http://127.0.0.1:8000/checkout/success?order={ORDER_ID}&session={CHECKOUT_SESSION_ID}"
)
# What payments may answer the saga's InquirePayment with.
INQUIRY_ANSWERS = (
    PaymentSucceeded.TYPE,
    PaymentFailed.TYPE,
    PaymentExpired.TYPE,
    PaymentPending.TYPE,
)
# What payments may say about a money refund.
REFUND_OUTCOMES = (PaymentRefunded.TYPE, RefundFailed.TYPE)


def payments_settings(database_url: str, **overrides: Any) -> PaymentsSettings:
    """Stripe's key and webhook secret are the simulator harness's, so events signed by the
    simulator or by `stripe_sim.signed` are accepted."""
    values: dict[str, Any] = {
        "stripe_api_key": API_KEY,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        # Nothing listens here: a test that reaches Stripe by accident fails fast. Plain HTTP, as
        # the simulator serves it: the tests are a development setup and say so.
        "stripe_api_base": "http://127.0.0.1:9",
        "allow_insecure_stripe_base": True,
        # Where Stripe would send the shopper back; no test follows it.
        "checkout_success_url": TEST_SUCCESS_URL,
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


async def paid_order(
    payments: ServiceRig, sim: Sim, *, payment_method: str = "card"
) -> tuple[str, str, str]:
    """An order paid by card (or another of the simulator's card kinds) at the simulator, its
    webhook delivered: (order, session, intent)."""
    order = new_order_id()
    session_id = await send_create(payments, order)
    paid = await sim.control(f"sessions/{session_id}/pay", {"payment_method": payment_method})
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


# --- money refunds ---------------------------------------------------------------------------


def refund_payment(order_id: str, amount: int, key: str = "failed-lines-2") -> RefundPayment:
    """The saga's RefundPayment of `amount` of the order's payment under `key`."""
    return RefundPayment(order_id=order_id, refund_key=key, amount=amount, reason="line 2 failed")


def refunded(order_id: str, amount: int, key: str = "failed-lines-2") -> tuple[str, dict[str, Any]]:
    """PaymentRefunded as refund_outcomes lists it."""
    return PaymentRefunded.TYPE, {"order_id": order_id, "refund_key": key, "amount": amount}


def refund_failed(
    order_id: str, amount: int, reason: str, *, key: str = "failed-lines-2", status: str = "failed"
) -> tuple[str, dict[str, Any]]:
    """RefundFailed as refund_outcomes lists it."""
    answer = {"order_id": order_id, "refund_key": key, "amount": amount}
    return RefundFailed.TYPE, {**answer, "status": status, "reason": reason}


async def stored_refund(payments: ServiceRig, order_id: str, key: str) -> Refund:
    async with payments.runtime.sessionmaker() as db:
        row = await db.get(Refund, (order_id, key))
    assert row is not None, f"no refund {key!r} of {order_id}"
    return row


async def refund_outcomes(payments: ServiceRig, order_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every PaymentRefunded / RefundFailed emitted for the order, oldest first, as (type,
    payload): whichever path emitted it (the command, a webhook, the reconciler)."""
    emitted = await payments.emitted(correlation_id=order_id)
    return [(e.type, e.payload) for e in emitted if e.type in REFUND_OUTCOMES]


async def refund_elsewhere(sim: Sim, intent: str, amount: int | None = None) -> str:
    """A refund made outside this service (the Dashboard), straight at Stripe; its id."""
    http = stripe.HTTPXClient()
    try:
        params: dict[str, Any] = {"payment_intent": intent}
        if amount is not None:
            params["amount"] = amount
        made = await sim.client(http_client=http).v1.refunds.create_async(params)  # type: ignore[arg-type]
        return str(made.id)
    finally:
        await http.close_async()


async def reconcile_refunds(payments: ServiceRig, **params: Any) -> httpx.Response:
    """The operator's refund reconciliation round (`older_than_seconds` overrides the age)."""
    return await payments.http.post(
        "/operator/refunds/reconcile", params=params, headers=as_user("ops", operator=True)
    )


# --- races on PostgreSQL ---------------------------------------------------------------------


async def behind_a_held_lock(
    payments: ServiceRig, lock: str, params: dict[str, str], *writers: Awaitable[T]
) -> list[T]:
    """Runs the writers (of any replica on the same database) while a blocker holds the row
    lock `lock` takes; lets go once all of them wait on a lock, so none decides before every
    one has started. PostgreSQL only."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with payments.runtime.engine.connect() as blocker:
        held = await blocker.begin()
        await blocker.execute(text(lock), params)
        racing = asyncio.gather(*writers)
        async with payments.runtime.engine.connect() as watcher:
            for _ in range(200):
                queued = (await watcher.execute(waiting)).scalar_one()
                await watcher.rollback()  # pg_stat_activity is a snapshot per transaction
                if queued >= len(writers):
                    break
                await asyncio.sleep(0.025)
            else:
                raise AssertionError(f"{len(writers)} writers never queued on the lock")
        await held.rollback()
        return await racing
