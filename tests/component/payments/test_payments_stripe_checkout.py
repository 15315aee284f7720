"""CreatePaymentSession and ExpirePaymentSession through the real `stripe` SDK against the bundled
Stripe simulator over HTTP, and the simulator's own signed webhooks fed to our endpoint."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.payments.bootstrap import build
from services.payments.settings import PaymentsSettings
from services.payments.stripe_gateway import StripeGateway
from shared.messages.contracts import (
    ExpirePaymentSession,
    PaymentExpired,
    PaymentSessionCreated,
    PaymentSessionFailed,
    PaymentSucceeded,
)
from tests.support.payments import create_command, settings_on_sim, stored_session
from tests.support.rig import ServiceRig, sqlite_url
from tests.support.stripe_sim import Sim, retrieve, webhooks_of


async def test_a_payment_session_is_created_at_stripe_and_stored(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order = str(uuid.uuid4())
    envelope = await payments_on_sim.deliver(create_command(order), correlation_id=order)

    [created] = await payments_on_sim.emitted(PaymentSessionCreated.TYPE)
    session_id = created.payload["session_id"]
    assert session_id.startswith("cs_test_")
    assert created.payload["url"].startswith(stripe_sim.url)
    assert created.correlation_id == order
    row = await stored_session(payments_on_sim, order)
    assert (row.session_id, row.status, row.amount_total, row.currency, row.trace_id) == (
        session_id,
        "open",
        2999,
        "eur",
        order,
    )

    at_stripe = await retrieve(stripe_sim, session_id)
    assert at_stripe.client_reference_id == order
    assert at_stripe.to_dict()["metadata"] == {"order_id": order, "trace_id": order}
    assert at_stripe.amount_total == 2999
    assert str(at_stripe.success_url).startswith(
        "http://127.0.0.1:8000/checkout/success?order=" + order
    )

    await payments_on_sim.redeliver(envelope)
    await payments_on_sim.deliver(create_command(order), correlation_id=order)
    again = await payments_on_sim.emitted(PaymentSessionCreated.TYPE)
    assert [e.payload["session_id"] for e in again] == [session_id, session_id]


async def test_the_idempotency_key_returns_the_same_session_for_the_same_order(
    payments_on_sim: ServiceRig,
) -> None:
    gateway: StripeGateway = payments_on_sim.runtime.deps.stripe
    order = str(uuid.uuid4())
    command = create_command(order)
    expires_at = datetime.now(UTC) + timedelta(hours=3)

    first, second = [
        await gateway.create_checkout_session(
            order_id=order,
            currency=command.currency,
            lines=command.lines,
            expires_at=expires_at,
            success_url="http://shop/ok",
            cancel_url="http://shop/cancel",
            metadata={"order_id": order},
        )
        for _ in range(2)
    ]

    assert first.id == second.id
    assert abs(first.expires_at - expires_at) < timedelta(seconds=1)


async def test_a_deadline_too_soon_for_stripe_is_moved_into_its_window(
    payments_on_sim: ServiceRig,
) -> None:
    order = str(uuid.uuid4())

    await payments_on_sim.deliver(
        create_command(order, expires_in=timedelta(minutes=5)), correlation_id=order
    )

    [created] = await payments_on_sim.emitted(PaymentSessionCreated.TYPE)
    expires_at = datetime.fromisoformat(created.payload["expires_at"])
    assert timedelta(minutes=30) < expires_at - datetime.now(UTC) < timedelta(minutes=33)


async def test_paying_at_stripe_reaches_payment_succeeded_through_the_signed_webhook(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order = str(uuid.uuid4())
    await payments_on_sim.deliver(create_command(order), correlation_id=order)
    session_id = (await stored_session(payments_on_sim, order)).session_id

    async with httpx.AsyncClient() as sim_http:
        paid = await sim_http.post(f"{stripe_sim.url}/_sim/sessions/{session_id}/pay")
    assert paid.status_code == 200
    deliveries = await webhooks_of(stripe_sim, "checkout.session.completed", session_id)
    for delivery in deliveries * 2:  # Stripe may deliver an event more than once
        hook = await payments_on_sim.http.post(
            "/webhooks/stripe",
            content=delivery.body,
            headers={"Stripe-Signature": delivery.signature},
        )
        assert hook.status_code == 200

    [succeeded] = await payments_on_sim.emitted(PaymentSucceeded.TYPE)
    at_stripe = await retrieve(stripe_sim, session_id)
    intent_id = at_stripe.payment_intent
    assert isinstance(intent_id, str) and intent_id.startswith("pi_")
    assert succeeded.payload == {
        "order_id": order,
        "session_id": session_id,
        "payment_intent_id": intent_id,
        "amount": 2999,
        "currency": "eur",
    }
    assert succeeded.correlation_id == order
    row = await stored_session(payments_on_sim, order)
    assert (row.status, row.payment_intent_id) == ("complete", intent_id)


async def test_a_refused_stripe_call_fails_the_session_without_retrying(
    tmp_path: Path, stripe_sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_on_sim(
        sqlite_url(tmp_path / "payments.db"),
        stripe_sim,
        stripe_api_key="sk_test_wrong",
        stripe_max_attempts=3,
    )
    payments = await ServiceRig.start(build, settings)
    try:
        order = str(uuid.uuid4())
        with caplog.at_level(logging.WARNING, logger="services.payments.stripe"):
            await payments.deliver(create_command(order), correlation_id=order)
        [failed] = await payments.emitted(PaymentSessionFailed.TYPE)
    finally:
        await payments.stop()
    assert "AuthenticationError" in failed.payload["reason"]
    assert "sk_test_wrong" not in failed.payload["reason"] + caplog.text
    assert "retrying" not in caplog.text


async def test_a_burst_of_stripe_5xx_within_the_default_retry_budget_still_creates_the_session(
    tmp_path: Path, stripe_sim: Sim
) -> None:
    # The chaos run lost a card order to four 5xx in a row when the default was 3 attempts.
    settings = settings_on_sim(
        sqlite_url(tmp_path / "payments.db"),
        stripe_sim,
        stripe_max_attempts=PaymentsSettings.model_fields["stripe_max_attempts"].default,
    )
    burst = {"method": "POST", "path_prefix": "/v1/checkout/sessions", "count": 4, "status": 500}
    await stripe_sim.control("faults", {"api_errors": [burst]})
    payments = await ServiceRig.start(build, settings)
    try:
        order = str(uuid.uuid4())
        await payments.deliver(create_command(order), correlation_id=order)
        assert await payments.emitted(PaymentSessionFailed.TYPE) == []
        [created] = await payments.emitted(PaymentSessionCreated.TYPE)
        assert created.payload["order_id"] == order
    finally:
        await payments.stop()
        # The module's simulator is shared: no rule may outlive this test.
        await stripe_sim.control("faults", {"api_errors": []})


async def test_an_unreachable_stripe_fails_the_session_after_bounded_retries(
    payments: ServiceRig, caplog: pytest.LogCaptureFixture
) -> None:
    order = str(uuid.uuid4())

    with caplog.at_level(logging.WARNING, logger="services.payments.stripe"):
        await payments.deliver(create_command(order), correlation_id=order)

    [failed] = await payments.emitted(PaymentSessionFailed.TYPE)
    assert "APIConnectionError" in failed.payload["reason"]
    assert caplog.text.count("retrying") == 1  # stripe_max_attempts=2 in the test settings
    assert await payments.emitted(PaymentSessionCreated.TYPE) == []


async def test_lines_that_do_not_add_up_to_the_total_fail_before_stripe(
    payments: ServiceRig,
) -> None:
    order = str(uuid.uuid4())
    command = create_command(order).model_copy(update={"amount_total": 1})

    await payments.deliver(command, correlation_id=order)

    [failed] = await payments.emitted(PaymentSessionFailed.TYPE)
    assert failed.payload["reason"].startswith("amount_mismatch")


async def test_expiring_a_session_emits_payment_expired_once(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order = str(uuid.uuid4())
    await payments_on_sim.deliver(create_command(order), correlation_id=order)
    session_id = (await stored_session(payments_on_sim, order)).session_id

    await payments_on_sim.deliver(ExpirePaymentSession(order_id=order), correlation_id=order)
    await payments_on_sim.deliver(ExpirePaymentSession(order_id=order), correlation_id=order)
    [delivery] = await webhooks_of(stripe_sim, "checkout.session.expired", session_id)
    hook = await payments_on_sim.http.post(
        "/webhooks/stripe", content=delivery.body, headers={"Stripe-Signature": delivery.signature}
    )

    assert hook.status_code == 200
    [expired] = await payments_on_sim.emitted(PaymentExpired.TYPE)
    assert expired.payload == {"order_id": order, "session_id": session_id}
    assert (await stored_session(payments_on_sim, order)).status == "expired"
    assert await payments_on_sim.emitted(PaymentSucceeded.TYPE) == []
