"""The orders service in process (SQLite, in-process bus): idempotency of the saga start and
the deadline scheduler acting on what is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest_asyncio
from sqlalchemy import func, select

from services.orders.bootstrap import build
from services.orders.deadlines import fire_due
from services.orders.models import Order, SagaInstance, StatusChange, outbox
from services.orders.settings import OrdersSettings
from shared.auth import issue_token
from shared.memory_bus import MemoryBus
from shared.messages import Envelope
from shared.messages import contracts as c
from shared.runtime import ServiceRuntime

SECRET = "orders-test-secret-0123456789abcdef"


@pytest_asyncio.fixture(loop_scope="session")
async def orders(tmp_path: Path) -> AsyncIterator[ServiceRuntime]:
    settings = OrdersSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/orders.db",
        broker_url="memory://",
        jwt_secret=SECRET,  # type: ignore[arg-type]
        step_timeout_seconds=5,
        deadline_poll_seconds=3600,  # the test fires deadlines itself
    )
    bus = MemoryBus()
    runtime = build(settings, bus=bus, auto_migrate=True)
    await runtime.start()
    yield runtime
    await runtime.stop()
    await bus.close()


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


async def sent(runtime: ServiceRuntime, message_type: str) -> int:
    async with runtime.sessionmaker() as session:
        query = (
            select(func.count()).select_from(outbox).where(outbox.c.message_type == message_type)
        )
        return int((await session.execute(query)).scalar_one())


async def test_the_same_checkout_delivered_twice_under_new_message_ids_starts_one_saga(
    orders: ServiceRuntime,
) -> None:
    for _ in range(3):  # a producer retry makes a new envelope id each time
        await orders.dispatcher(Envelope.wrap(checkout(), correlation_id="o-1"))
    async with orders.sessionmaker() as session:
        assert (await session.execute(select(func.count()).select_from(Order))).scalar_one() == 1
        history = (await session.execute(select(StatusChange.status))).scalars().all()
    assert history == ["pending"]
    assert await sent(orders, c.ReserveCredits.TYPE) == 1


async def test_a_due_deadline_is_fired_from_the_database_and_only_once(
    orders: ServiceRuntime,
) -> None:
    await orders.dispatcher(Envelope.wrap(checkout("o-2"), correlation_id="o-2"))
    await orders.dispatcher(
        Envelope.wrap(c.CreditsReserved(order_id="o-2", credits=400), correlation_id="o-2")
    )
    timing = orders.spec.state["timing"]
    assert await fire_due(orders, timing=timing) == 0  # not due yet

    async with orders.transaction() as session:  # time passes: move the deadline into the past
        saga = await session.get(SagaInstance, "o-2")
        assert saga is not None and saga.step == "creating_job"
        saga.deadline_at = datetime.now(UTC) - timedelta(seconds=1)
        state = dict(saga.state)
        state["deadline"] = saga.deadline_at.isoformat()
        saga.state = state

    assert await fire_due(orders, timing=timing) == 1
    assert await fire_due(orders, timing=timing) == 0  # compensating now, next deadline ahead
    async with orders.sessionmaker() as session:
        order = await session.get(Order, "o-2")
    assert order is not None and order.status == "compensating"
    assert order.status_reason == "creating_job timed out"
    assert await sent(orders, c.CancelJob.TYPE) == 1
    assert await sent(orders, c.ReleaseCredits.TYPE) == 1


async def test_orders_are_private_and_cancel_answers_with_codes(orders: ServiceRuntime) -> None:
    await orders.dispatcher(Envelope.wrap(checkout("o-3"), correlation_id="o-3"))
    app = orders.app(manage_lifecycle=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        alice = {"Authorization": f"Bearer {issue_token(SECRET, 'alice')}"}
        bob = {"Authorization": f"Bearer {issue_token(SECRET, 'bob')}"}
        assert (await http.get("/orders/o-3", headers=alice)).status_code == 200
        hidden = await http.get("/orders/o-3", headers=bob)
        assert hidden.status_code == 404 and hidden.json()["code"] == "order_not_found"
        assert (await http.get("/orders/o-3")).json()["code"] == "missing_token"
        assert (await http.post("/orders/o-3/cancel", headers=bob)).status_code == 404
        cancelled = await http.post("/orders/o-3/cancel", headers=alice)
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "compensating"
        assert cancelled.json()["history"][-1]["reason"] == "cancelled by the shopper"
        operator = {"Authorization": f"Bearer {issue_token(SECRET, 'ops', roles=('operator',))}"}
        assert (await http.get("/operator/sagas/stuck", headers=alice)).status_code == 403
        assert (await http.get("/operator/sagas/stuck", headers=operator)).status_code == 200
