"""The reconciler: webhooks the simulator sent are never forwarded here (lost), so only asking
Stripe can settle the sessions — once, whoever else learns about them later."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx

from services.payments.bootstrap import build
from shared.messages.contracts import PaymentExpired, PaymentFailed, PaymentSucceeded
from tests.support.payments import forward, send_create, settings_on_sim, stored_session
from tests.support.rig import ServiceRig, as_user, sqlite_url
from tests.support.stripe_sim import Sim, webhooks_of


async def reconcile(payments: ServiceRig, **params: Any) -> httpx.Response:
    return await payments.http.post(
        "/operator/reconcile", params=params, headers=as_user("ops", operator=True)
    )


async def test_a_payment_whose_webhook_was_lost_is_found_by_the_reconciler_once(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order = str(uuid.uuid4())
    session_id = await send_create(payments_on_sim, order)
    paid = await stripe_sim.control(f"sessions/{session_id}/pay")
    intent = paid["data"]["object"]["payment_intent"]

    too_young = await reconcile(payments_on_sim)  # default minimum age: left to the webhook
    found = await reconcile(payments_on_sim, older_than_seconds=0)
    again = await reconcile(payments_on_sim, older_than_seconds=0)
    # The webhook turns up after all: nothing more happens.
    await forward(
        payments_on_sim, await webhooks_of(stripe_sim, "checkout.session.completed", session_id)
    )

    assert too_young.json() == {"checked": 0, "changed": [], "errors": []}
    assert found.status_code == 200
    assert found.json()["changed"] == [
        {
            "order_id": order,
            "session_id": session_id,
            "status_before": "open",
            "status": "complete",
        }
    ]
    assert again.json()["changed"] == []
    [succeeded] = await payments_on_sim.emitted(PaymentSucceeded.TYPE)
    assert succeeded.payload == {
        "order_id": order,
        "session_id": session_id,
        "payment_intent_id": intent,
        "amount": 2999,
        "currency": "eur",
    }
    assert succeeded.correlation_id == order
    row = await stored_session(payments_on_sim, order)
    assert (row.status, row.payment_intent_id) == ("complete", intent)
    assert row.reconciled_at is not None


async def test_an_expired_session_is_reconciled_to_payment_expired(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order = str(uuid.uuid4())
    session_id = await send_create(payments_on_sim, order)
    await stripe_sim.control(f"sessions/{session_id}/expire_now")

    found = await reconcile(payments_on_sim, older_than_seconds=0)

    assert [c["status"] for c in found.json()["changed"]] == ["expired"]
    [expired] = await payments_on_sim.emitted(PaymentExpired.TYPE)
    assert expired.payload == {"order_id": order, "session_id": session_id}


async def test_a_delayed_payment_is_followed_through_processing_to_failed(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order = str(uuid.uuid4())
    session_id = await send_create(payments_on_sim, order)
    await stripe_sim.control(f"sessions/{session_id}/pay", {"payment_method": "delayed"})

    processing = await reconcile(payments_on_sim, older_than_seconds=0)
    still = await reconcile(payments_on_sim, older_than_seconds=0)
    await stripe_sim.control(f"sessions/{session_id}/async_result", {"outcome": "failed"})
    failed = await reconcile(payments_on_sim, older_than_seconds=0)

    assert [c["status"] for c in processing.json()["changed"]] == ["processing"]
    assert still.json()["changed"] == []
    assert [(c["status_before"], c["status"]) for c in failed.json()["changed"]] == [
        ("processing", "failed")
    ]
    [payment_failed] = await payments_on_sim.emitted(PaymentFailed.TYPE)
    assert payment_failed.payload["order_id"] == order
    assert await payments_on_sim.emitted(PaymentSucceeded.TYPE) == []


async def test_a_delayed_payment_that_succeeds_is_reconciled_to_payment_succeeded(
    payments_on_sim: ServiceRig, stripe_sim: Sim
) -> None:
    order = str(uuid.uuid4())
    session_id = await send_create(payments_on_sim, order)
    await stripe_sim.control(f"sessions/{session_id}/pay", {"payment_method": "delayed"})
    await stripe_sim.control(f"sessions/{session_id}/async_result", {"outcome": "succeeded"})

    found = await reconcile(payments_on_sim, older_than_seconds=0)

    assert [c["status"] for c in found.json()["changed"]] == ["complete"]
    assert len(await payments_on_sim.emitted(PaymentSucceeded.TYPE)) == 1


async def test_the_reconciler_is_for_operators_only(payments_on_sim: ServiceRig) -> None:
    http = payments_on_sim.http
    anonymous = await http.post("/operator/reconcile")
    shopper = await http.post("/operator/reconcile", headers=as_user("shopper-1"))

    assert (anonymous.status_code, shopper.status_code) == (401, 403)


async def test_the_background_reconciler_settles_a_lost_payment_on_its_own(
    tmp_path: Path, stripe_sim: Sim
) -> None:
    settings = settings_on_sim(
        sqlite_url(tmp_path / "payments.db"),
        stripe_sim,
        reconcile_interval_seconds=0.1,
        reconcile_min_age_seconds=0,
    )
    payments = await ServiceRig.start(build, settings)
    try:
        order = str(uuid.uuid4())
        session_id = await send_create(payments, order)
        await stripe_sim.control(f"sessions/{session_id}/pay")
        for _ in range(100):
            if await payments.emitted(PaymentSucceeded.TYPE):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a few more rounds: still one
    finally:
        await payments.stop()
    [succeeded] = await payments.emitted(PaymentSucceeded.TYPE)
    assert succeeded.payload["session_id"] == session_id
