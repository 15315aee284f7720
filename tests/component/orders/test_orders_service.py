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
from tests.support.orders import orders_settings
from tests.support.rig import Rigs, ServiceRig, as_user, sqlite_url


@pytest_asyncio.fixture(loop_scope="session")
async def orders(tmp_path: Path) -> AsyncIterator[ServiceRig]:
    settings = orders_settings(sqlite_url(tmp_path / "orders.db"), step_timeout_seconds=5)
    # The tests fire deadlines themselves: a background scheduler's round (its first runs at
    # start) could take a deadline a test moved before the test's own fire_due sees it.
    async with Rigs() as rigs:
        yield await rigs.start(ServiceRig, build, settings, fire_deadlines=False)


def checkout(order_id: str = "o-1") -> c.CheckoutRequested:
    line = c.CheckoutLine(
        line_no=1,
        item_id="pkg-10",
        kind="session_package",
        name="10 sessions",
        quantity=1,
        unit_price=5000,
        unit_credits=400,
        units_per_item=10,
        paid_with="credits",
    )
    return c.CheckoutRequested(
        checkout_id=order_id,
        cart_id="cart-1",
        user_id="alice",
        currency="EUR",
        lines=(line,),
        money_total=0,
        credits_total=400,
    )


async def test_the_same_checkout_delivered_twice_under_new_message_ids_starts_one_saga(
    orders: ServiceRig,
) -> None:
    for _ in range(3):  # a producer retry makes a new envelope id each time
        await orders.deliver(checkout(), correlation_id="o-1")
    async with orders.runtime.sessionmaker() as session:
        assert (await session.execute(select(func.count()).select_from(Order))).scalar_one() == 1
        history = (await session.execute(select(StatusChange.status))).scalars().all()
    assert history == ["pending"]
    assert len(await orders.emitted(c.ReserveCredits.TYPE)) == 1


async def test_a_due_deadline_is_fired_from_the_database_and_only_once(
    orders: ServiceRig,
) -> None:
    await orders.deliver(checkout("o-2"), correlation_id="o-2")
    await orders.deliver(c.CreditsReserved(order_id="o-2", credits=400), correlation_id="o-2")
    timing = orders.runtime.deps.timing
    assert await fire_due(orders.runtime, timing=timing) == 0  # not due yet

    async with (
        orders.runtime.transaction() as session
    ):  # time passes: move the deadline into the past
        saga = await session.get(SagaInstance, "o-2")
        assert saga is not None and saga.step == "creating_job"
        saga.deadline_at = datetime.now(UTC) - timedelta(seconds=1)
        state = dict(saga.state)
        state["deadline"] = saga.deadline_at.isoformat()
        saga.state = state

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
    await orders.deliver(checkout("o-3"), correlation_id="o-3")
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
