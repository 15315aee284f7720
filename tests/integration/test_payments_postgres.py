"""Payments on real PostgreSQL: the migration applies, and concurrent writers cannot overspend
credits, refund more credits than were captured, or apply one Stripe event twice."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest_asyncio
from sqlalchemy import select, text

from services.payments import repository
from services.payments.bootstrap import build
from services.payments.domain import Balance, RefundExceedsCapture, balances_from_entries
from services.payments.models import CreditAccount, LedgerEntry, outbox
from services.payments.settings import PaymentsSettings
from services.payments.stripe_gateway import CheckoutSession
from shared.memory_bus import MemoryBus
from shared.messages import Contract, Envelope
from shared.messages.contracts import (
    CaptureCredits,
    CreditsRefunded,
    CreditsRejected,
    CreditsReserved,
    GrantCredits,
    PaymentSucceeded,
    RefundCredits,
    ReserveCredits,
)
from shared.runtime import ServiceRuntime

WEBHOOK_SECRET = "whsec_payments_pg_test"


@pytest_asyncio.fixture
async def payments_pg(
    fresh_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[ServiceRuntime]:
    url = await fresh_database("payments")
    settings = PaymentsSettings(
        database_url=url,
        broker_url="memory://",
        stripe_api_key="sk_test_payments_pg",
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base="http://127.0.0.1:9",
        log_json=False,
    )
    runtime = build(settings, bus=MemoryBus(), auto_migrate=True)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def send(runtime: ServiceRuntime, message: Contract, trace_id: str) -> None:
    await runtime.dispatcher(Envelope.wrap(message, correlation_id=trace_id))


async def emitted(runtime: ServiceRuntime, message_type: str) -> list[Envelope]:
    stmt = select(outbox.c.body).where(outbox.c.message_type == message_type)
    async with runtime.sessionmaker() as session:
        return [Envelope.model_validate_json(b) for b in (await session.execute(stmt)).scalars()]


async def wait_for_lock_waiters(runtime: ServiceRuntime, count: int) -> None:
    """Until `count` other backends are blocked on a lock: both writers are really contending."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with runtime.engine.connect() as conn:
        for _ in range(200):
            waiting = (await conn.execute(query)).scalar_one()
            # PostgreSQL snapshots pg_stat_activity until the transaction ends; end it per look.
            await conn.rollback()
            if waiting >= count:
                return
            await asyncio.sleep(0.025)
    raise AssertionError(f"{count} writers never queued on the row lock")


async def test_two_concurrent_reserves_that_fit_only_once_reserve_once(
    payments_pg: ServiceRuntime,
) -> None:
    runtime = payments_pg
    await send(runtime, GrantCredits(grant_id="g", user_id="ann", credits=100, reason="t"), "t")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())

    # Hold the account row so both reserves are parked on it before either can decide.
    async with runtime.engine.connect() as blocker:
        transaction = await blocker.begin()
        await blocker.execute(
            text("SELECT 1 FROM credit_accounts WHERE user_id = 'ann' FOR UPDATE")
        )
        racing = asyncio.gather(
            send(runtime, ReserveCredits(order_id=first, user_id="ann", credits=60), first),
            send(runtime, ReserveCredits(order_id=second, user_id="ann", credits=60), second),
        )
        await wait_for_lock_waiters(runtime, 2)
        await transaction.rollback()
        await racing

    reserved = await emitted(runtime, CreditsReserved.TYPE)
    rejected = await emitted(runtime, CreditsRejected.TYPE)
    assert len(reserved) == 1 and len(rejected) == 1
    assert {reserved[0].payload["order_id"], rejected[0].payload["order_id"]} == {first, second}
    assert rejected[0].payload == {
        "order_id": rejected[0].payload["order_id"],
        "reason": "insufficient_credits",
        "available": 40,
    }
    async with runtime.sessionmaker() as session:
        account = await session.get(CreditAccount, "ann")
        entries = (await session.execute(select(LedgerEntry))).scalars().all()
    assert account is not None
    assert Balance(account.available, account.reserved) == Balance(40, 60)
    assert balances_from_entries(entries)["ann"] == Balance(40, 60)


async def test_one_stripe_event_delivered_twice_at_once_succeeds_once(
    payments_pg: ServiceRuntime,
) -> None:
    runtime = payments_pg
    order = str(uuid.uuid4())
    checkout = CheckoutSession(
        id="cs_test_pg_1",
        url="https://checkout.example/cs_test_pg_1",
        status="open",
        amount_total=990,
        currency="eur",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        payment_intent_id=None,
    )
    async with runtime.transaction() as session:
        await repository.add_payment_session(
            session, order_id=order, checkout=checkout, trace_id=order
        )
    event = {
        "id": "evt_pg_dup",
        "object": "event",
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": "cs_test_pg_1",
                "object": "checkout.session",
                "payment_status": "paid",
                "amount_total": 990,
                "currency": "eur",
                "payment_intent": "pi_pg_1",
            }
        },
    }
    body = json.dumps(event).encode()
    stamp = int(time.time())
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    headers = {"Stripe-Signature": f"t={stamp},v1={mac.hexdigest()}"}

    transport = httpx.ASGITransport(app=runtime.app(manage_lifecycle=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://payments") as http:
        responses = await asyncio.gather(
            *(http.post("/webhooks/stripe", content=body, headers=headers) for _ in range(4))
        )

    assert [r.status_code for r in responses] == [200] * 4
    [succeeded] = await emitted(runtime, PaymentSucceeded.TYPE)
    assert succeeded.payload["payment_intent_id"] == "pi_pg_1"
    assert succeeded.correlation_id == order


async def test_concurrent_credit_refunds_of_one_order_never_exceed_its_capture(
    payments_pg: ServiceRuntime,
) -> None:
    runtime = payments_pg
    order = str(uuid.uuid4())
    await send(runtime, GrantCredits(grant_id="g-ida", user_id="ida", credits=100, reason="t"), "t")
    await send(runtime, ReserveCredits(order_id=order, user_id="ida", credits=100), order)
    await send(runtime, CaptureCredits(order_id=order, user_id="ida", credits=100), order)

    async def refund(key: str) -> BaseException | None:
        command = RefundCredits(
            order_id=order, user_id="ida", refund_key=key, credits=40, reason="t"
        )
        try:
            await send(runtime, command, order)
        except RefundExceedsCapture as exc:
            return exc
        return None

    # Hold the reservation row so all three refunds queue on it before any can decide.
    async with runtime.engine.connect() as blocker:
        transaction = await blocker.begin()
        await blocker.execute(
            text("SELECT 1 FROM credit_reservations WHERE order_id = :o FOR UPDATE"), {"o": order}
        )
        racing = asyncio.gather(refund("a"), refund("b"), refund("c"))
        await wait_for_lock_waiters(runtime, 3)
        await transaction.rollback()
        outcomes = await racing

    assert sum(outcome is None for outcome in outcomes) == 2
    assert len(await emitted(runtime, CreditsRefunded.TYPE)) == 2
    async with runtime.sessionmaker() as session:
        account = await session.get(CreditAccount, "ida")
        entries = (await session.execute(select(LedgerEntry))).scalars().all()
    assert account is not None and Balance(account.available, account.reserved) == Balance(80, 0)
    assert balances_from_entries(entries)["ida"] == Balance(80, 0)
