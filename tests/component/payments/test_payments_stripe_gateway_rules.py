"""The Stripe gateway against the simulator through the official SDK: the payment methods a shop
allows travel with every Checkout Session; what Stripe refuses at creation (a 400) fails at once
and for good; a 5xx Stripe keeps for the idempotency key (`Stripe-Should-Retry: false`) is not
asked again, while one Stripe marks safe to repeat is."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from services.payments.bootstrap import build
from services.payments.stripe_gateway import CheckoutSession, StripeCallFailed, StripeGateway
from shared.messages.contracts import (
    CreatePaymentSession,
    PaymentLine,
    PaymentSessionCreated,
    PaymentSessionFailed,
)
from tests.support.payments import create_command, settings_on_sim
from tests.support.rig import ServiceRig, sqlite_url
from tests.support.stripe_sim import API_KEY, Sim, raw_json, retrieve

SESSIONS = "/v1/checkout/sessions"


@pytest_asyncio.fixture
async def faults_cleared(stripe_sim: Sim) -> AsyncIterator[Sim]:
    """The module's simulator, with no fault outliving the test."""
    try:
        yield stripe_sim
    finally:
        await stripe_sim.control("faults", {"api_errors": [], "api_errors_after_execution": []})


def gateway_on(sim: Sim, **options: object) -> StripeGateway:
    return StripeGateway(
        api_key=API_KEY,
        api_base=sim.url,
        max_attempts=3,
        retry_base_seconds=0.01,
        **options,  # type: ignore[arg-type]
    )


async def open_session(
    gateway: StripeGateway, order_id: str, *, unit: int = 1250
) -> CheckoutSession:
    return await gateway.create_checkout_session(
        order_id=order_id,
        currency="EUR",
        lines=(PaymentLine(name="Server plan S", quantity=2, unit_amount=unit),),
        expires_at=datetime.now(UTC) + timedelta(hours=2),
        success_url="https://shop.example/done?order=" + order_id,
        cancel_url="",
        metadata={"order_id": order_id},
    )


def sim_pay(sim: Sim, session_id: str, payment_method: str) -> int:
    response = httpx.post(
        f"{sim.url}/_sim/sessions/{session_id}/pay", json={"payment_method": payment_method}
    )
    return response.status_code


async def test_the_allowed_payment_method_types_are_sent_with_every_session(
    stripe_sim: Sim,
) -> None:
    gateway = gateway_on(stripe_sim, payment_method_types=("card",))
    try:
        session = await open_session(gateway, str(uuid.uuid4()))
    finally:
        await gateway.aclose()

    at_stripe = raw_json(await retrieve(stripe_sim, session.id))
    assert at_stripe["payment_method_types"] == ["card"]
    assert at_stripe["cancel_url"] is None  # no cancel page configured: none is sent
    assert sim_pay(stripe_sim, session.id, "delayed") == 400  # a bank debit is not offered
    assert sim_pay(stripe_sim, session.id, "card") == 200


async def test_without_allowed_types_stripe_offers_what_the_dashboard_enables(
    stripe_sim: Sim,
) -> None:
    gateway = gateway_on(stripe_sim)
    try:
        session = await open_session(gateway, str(uuid.uuid4()))
    finally:
        await gateway.aclose()

    assert sim_pay(stripe_sim, session.id, "delayed") == 200


async def test_the_setting_restricts_the_methods_of_the_services_sessions(
    tmp_path: Path, stripe_sim: Sim
) -> None:
    settings = settings_on_sim(
        sqlite_url(tmp_path / "payments.db"), stripe_sim, payment_method_types="sepa_debit"
    )
    payments = await ServiceRig.start(build, settings)
    try:
        order = str(uuid.uuid4())
        await payments.deliver(create_command(order), correlation_id=order)
        [created] = await payments.emitted(PaymentSessionCreated.TYPE)
    finally:
        await payments.stop()

    at_stripe = raw_json(await retrieve(stripe_sim, created.payload["session_id"]))
    assert at_stripe["payment_method_types"] == ["sepa_debit"]


async def test_a_total_stripe_refuses_fails_at_once_and_for_good(
    stripe_sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = gateway_on(stripe_sim)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="services.payments.stripe"),
            pytest.raises(StripeCallFailed) as failed,
        ):
            await open_session(gateway, str(uuid.uuid4()), unit=10)  # EUR 0.20 in all
    finally:
        await gateway.aclose()

    assert not failed.value.transient
    assert "amount_too_small" in failed.value.reason
    assert "retrying" not in caplog.text


async def test_an_order_below_stripes_minimum_charge_fails_its_payment_session(
    payments_on_sim: ServiceRig,
) -> None:
    order = str(uuid.uuid4())
    command = CreatePaymentSession(
        order_id=order,
        user_id="shopper-1",
        currency="EUR",
        amount_total=40,
        lines=(PaymentLine(name="Sticker", quantity=1, unit_amount=40),),
        expires_at=datetime.now(UTC) + timedelta(hours=2),
    )

    await payments_on_sim.deliver(command, correlation_id=order)

    [failed] = await payments_on_sim.emitted(PaymentSessionFailed.TYPE)
    assert "amount_too_small" in failed.payload["reason"]
    assert await payments_on_sim.emitted(PaymentSessionCreated.TYPE) == []


async def test_a_5xx_stripe_keeps_for_the_key_is_not_asked_again(
    faults_cleared: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    sim = faults_cleared
    rule = {"method": "POST", "path_prefix": SESSIONS}
    await sim.control("faults", {"api_errors_after_execution": [rule]})
    order = str(uuid.uuid4())
    gateway = gateway_on(sim)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="services.payments.stripe"),
            pytest.raises(StripeCallFailed) as failed,
        ):
            await open_session(gateway, order)
        # The order's next attempt (a redelivery) uses the same key: the same 500, not a second
        # session.
        with pytest.raises(StripeCallFailed) as again:
            await open_session(gateway, order)
    finally:
        await gateway.aclose()

    assert not failed.value.transient and not again.value.transient
    assert "Stripe-Should-Retry: false" in failed.value.reason
    assert "retrying" not in caplog.text
    client = sim.client()
    made = [s for s in client.v1.checkout.sessions.list({"limit": 100}).data]
    assert [s.client_reference_id for s in made].count(order) == 1


async def test_a_5xx_stripe_marks_safe_to_repeat_is_retried(
    faults_cleared: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    sim = faults_cleared
    rule = {"method": "POST", "path_prefix": SESSIONS, "count": 2, "status": 503}
    await sim.control("faults", {"api_errors": [rule]})
    gateway = gateway_on(sim)
    try:
        with caplog.at_level(logging.WARNING, logger="services.payments.stripe"):
            session = await open_session(gateway, str(uuid.uuid4()))
    finally:
        await gateway.aclose()

    assert session.status == "open"
    assert caplog.text.count("retrying") == 2
