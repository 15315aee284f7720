"""The orders service in process (SQLite, in-process bus): idempotency of the saga start and
the deadline scheduler acting on what is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest_asyncio
from sqlalchemy import func, select

from services.orders.bootstrap import build
from services.orders.deadlines import fire_due
from services.orders.models import Order, SagaInstance, StatusChange
from shared.messages import contracts as c
from tests.support.orders import checkout_of, orders_settings
from tests.support.rig import Rigs, ServiceRig, as_user, sqlite_url


@pytest_asyncio.fixture(loop_scope="session")
async def orders(tmp_path: Path) -> AsyncIterator[ServiceRig]:
    settings = orders_settings(sqlite_url(tmp_path / "orders.db"), step_timeout_seconds=5)
    # The tests fire deadlines themselves: a background scheduler's round (its first runs at
    # start) could take a deadline a test moved before the test's own fire_due sees it.
    async with Rigs() as rigs:
        yield await rigs.start(ServiceRig, build, settings, fire_deadlines=False)


async def make_due(orders: ServiceRig, order_id: str, *, step: str) -> None:
    """Time passes: the saga's deadline (column and state) moves into the past."""
    async with orders.runtime.transaction() as session:
        saga = await session.get(SagaInstance, order_id)
        assert saga is not None and saga.step == step
        saga.deadline_at = datetime.now(UTC) - timedelta(seconds=1)
        state = dict(saga.state)
        state["deadline"] = saga.deadline_at.isoformat()
        saga.state = state


async def test_the_same_checkout_delivered_twice_under_new_message_ids_starts_one_saga(
    orders: ServiceRig,
) -> None:
    for _ in range(3):  # a producer retry makes a new envelope id each time
        await orders.deliver(checkout_of("o-1"), correlation_id="o-1")
    async with orders.runtime.sessionmaker() as session:
        assert (await session.execute(select(func.count()).select_from(Order))).scalar_one() == 1
        history = (await session.execute(select(StatusChange.status))).scalars().all()
    assert history == ["pending"]
    assert len(await orders.emitted(c.ReserveCredits.TYPE)) == 1


async def test_a_due_deadline_is_fired_from_the_database_and_only_once(
    orders: ServiceRig,
) -> None:
    await orders.deliver(checkout_of("o-2"), correlation_id="o-2")
    await orders.deliver(c.CreditsReserved(order_id="o-2", credits=400), correlation_id="o-2")
    timing = orders.runtime.deps.timing
    assert await fire_due(orders.runtime, timing=timing) == 0  # not due yet

    await make_due(orders, "o-2", step="creating_job")

    assert await fire_due(orders.runtime, timing=timing) == 1
    # Compensating now, its next deadline ahead:
    assert await fire_due(orders.runtime, timing=timing) == 0
    async with orders.runtime.sessionmaker() as session:
        order = await session.get(Order, "o-2")
    assert order is not None and order.status == "compensating"
    assert order.status_reason == "creating_job timed out"
    assert len(await orders.emitted(c.CancelJob.TYPE)) == 1
    assert len(await orders.emitted(c.ReleaseCredits.TYPE)) == 1


async def test_orders_are_private_and_cancel_answers_with_codes(orders: ServiceRig) -> None:
    await orders.deliver(checkout_of("o-3"), correlation_id="o-3")
    http = orders.http
    alice, bob = as_user("alice"), as_user("bob")
    assert (await http.get("/orders/o-3", headers=alice)).status_code == 200
    hidden = await http.get("/orders/o-3", headers=bob)
    assert hidden.status_code == 404 and hidden.json()["code"] == "order_not_found"
    assert (await http.get("/orders/o-3")).json()["code"] == "missing_token"
    assert (await http.post("/orders/o-3/cancel", headers=bob)).status_code == 404
    cancelled = await http.post("/orders/o-3/cancel", headers=alice)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "compensating"
    assert cancelled.json()["history"][-1]["reason"] == "cancelled by the shopper"
    operator = as_user("ops", operator=True)
    assert (await http.get("/operator/sagas/stuck", headers=alice)).status_code == 403
    assert (await http.get("/operator/sagas/stuck", headers=operator)).status_code == 200


async def test_a_saga_whose_owner_keeps_silent_is_listed_for_operators_with_its_reason(
    orders: ServiceRig,
) -> None:
    # Silent owners are asked again ever more slowly: the next deadline is in the future, so a
    # list of sagas past their deadline alone would hide the very orders needing a human.
    await orders.deliver(checkout_of("o-5"), correlation_id="o-5")
    await orders.deliver(c.CreditsReserved(order_id="o-5", credits=400), correlation_id="o-5")
    await orders.deliver(c.JobCreated(order_id="o-5", job_id="j-5"), correlation_id="o-5")
    timing = orders.runtime.deps.timing
    for _ in range(timing.max_attempts):
        await make_due(orders, "o-5", step="capturing_credits")
        assert await fire_due(orders.runtime, timing=timing) == 1
    assert len(await orders.emitted(c.CaptureCredits.TYPE)) == 1 + timing.max_attempts

    listed = await orders.http.get("/operator/sagas/stuck", headers=as_user("ops", operator=True))
    assert listed.status_code == 200
    [saga] = [s for s in listed.json() if s["order_id"] == "o-5"]
    assert saga["step"] == "capturing_credits" and saga["attempts"] == timing.max_attempts
    assert saga["reason"].startswith("needs attention: payments has not answered")
    # SQLite gives back naive UTC times.
    next_question = datetime.fromisoformat(saga["deadline_at"]).replace(tzinfo=UTC)
    assert next_question > datetime.now(UTC)


async def card_order_awaiting_payment(orders: ServiceRig, order_id: str) -> None:
    """A 30 EUR card order (one server) whose payment session is open."""
    card = c.CheckoutLine(
        line_no=1,
        item_id="srv-s",
        kind="server_plan",
        name="Server S",
        quantity=1,
        unit_price=3000,
        paid_with="money",
    )
    await orders.deliver(
        c.CheckoutRequested(
            checkout_id=order_id,
            cart_id=f"cart-{order_id}",
            user_id="alice",
            currency="EUR",
            lines=(card,),
            money_total=3000,
            credits_total=0,
        ),
        correlation_id=order_id,
    )
    for reply in (
        c.JobCreated(order_id=order_id, job_id=f"job-{order_id}"),
        c.PaymentSessionCreated(
            order_id=order_id, session_id="cs_4", url="u", expires_at=datetime.now(UTC)
        ),
    ):
        await orders.deliver(reply, correlation_id=order_id)


async def test_a_payment_of_the_wrong_amount_is_refunded_and_the_order_never_completes(
    orders: ServiceRig,
) -> None:
    order_id = "o-4"
    await card_order_awaiting_payment(orders, order_id)
    for reply in (
        # Stripe reports what was really paid: 1 cent of a 30 EUR order.
        c.PaymentSucceeded(
            order_id=order_id, session_id="cs_4", payment_intent_id="pi_4", amount=1, currency="eur"
        ),
    ):
        await orders.deliver(reply, correlation_id=order_id)

    assert await orders.emitted(c.ProvisionOrder.TYPE, correlation_id=order_id) == []
    [refund] = await orders.emitted(c.RefundPayment.TYPE, correlation_id=order_id)
    assert (refund.payload["amount"], refund.payload["refund_key"]) == (1, "amount-mismatch")
    assert len(await orders.emitted(c.CancelJob.TYPE, correlation_id=order_id)) == 1

    await orders.deliver(c.JobCancelled(order_id=order_id), correlation_id=order_id)
    await orders.deliver(
        c.PaymentRefunded(order_id=order_id, refund_key="amount-mismatch", amount=1),
        correlation_id=order_id,
    )
    shown = (await orders.http.get(f"/orders/{order_id}", headers=as_user("alice"))).json()
    assert shown["status"] == "refunded"
    reasons = [(h["status"], h["reason"]) for h in shown["history"]]
    assert ("compensating", "amount_mismatch: paid 1 EUR, expected 3000 EUR") in reasons
    assert "completed" not in [status for status, _ in reasons]
    assert len(await orders.emitted(c.OrderCancelled.TYPE, correlation_id=order_id)) == 1


async def test_an_operator_sees_a_failed_refund_and_retries_it_or_records_one_made_elsewhere(
    orders: ServiceRig,
) -> None:
    operator, alice = as_user("ops", operator=True), as_user("alice")
    for order_id in ("o-6", "o-7"):
        await card_order_awaiting_payment(orders, order_id)
        for reply in (
            c.PaymentSucceeded(
                order_id=order_id,
                session_id="cs_4",
                payment_intent_id="pi",
                amount=3000,
                currency="eur",
            ),
            c.ProvisioningFailed(order_id=order_id, reason="panel_down"),
        ):
            await orders.deliver(reply, correlation_id=order_id)
        [refund] = await orders.emitted(c.RefundPayment.TYPE, correlation_id=order_id)
        key = refund.payload["refund_key"]
        refused = await orders.http.post(
            f"/operator/orders/{order_id}/refund/retry", json={"reason": "t"}, headers=operator
        )
        assert refused.status_code == 422  # a reason of three characters at least
        refused = await orders.http.post(
            f"/operator/orders/{order_id}/refund/retry",
            json={"reason": "too early"},
            headers=operator,
        )
        assert (refused.status_code, refused.json()["code"]) == (409, "refund_not_failed")
        await orders.deliver(
            c.RefundFailed(
                order_id=order_id,
                refund_key=key,
                amount=3000,
                status="rejected",
                reason="lost_card",
            ),
            correlation_id=order_id,
        )
        shown = (await orders.http.get(f"/orders/{order_id}", headers=alice)).json()
        assert shown["status"] == "refund_failed"
        assert shown["status_reason"] == "refund of 3000 EUR rejected: lost_card"

    forbidden = await orders.http.post(
        "/operator/orders/o-6/refund/retry", json={"reason": "new card"}, headers=alice
    )
    assert forbidden.status_code == 403
    retried = await orders.http.post(
        "/operator/orders/o-6/refund/retry", json={"reason": "new card"}, headers=operator
    )
    assert retried.status_code == 200, retried.text
    assert (
        retried.json()["history"][-1]["reason"]
        == "refund retried by an operator: new card (by ops)"
    )
    again = await orders.emitted(c.RefundPayment.TYPE, correlation_id="o-6")
    assert [m.payload["refund_key"] for m in again] == [key, f"{key}-retry1"]
    await orders.deliver(
        c.PaymentRefunded(order_id="o-6", refund_key=f"{key}-retry1", amount=3000),
        correlation_id="o-6",
    )
    assert (await orders.http.get("/orders/o-6", headers=alice)).json()["status"] == "refunded"

    recorded = await orders.http.post(
        "/operator/orders/o-7/refund/recorded",
        json={"reason": "paid back by bank transfer"},
        headers=operator,
    )
    assert recorded.status_code == 200, recorded.text
    assert recorded.json()["status"] == "refunded"
    assert recorded.json()["status_reason"] == (
        "refund made outside the app: paid back by bank transfer (by ops)"
    )
