"""Payments on real PostgreSQL: the migration applies, and concurrent writers cannot overspend
credits, refund more credits than were captured, or apply one Stripe event twice."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest_asyncio
from sqlalchemy import select, text

from services.payments.bootstrap import build
from services.payments.domain import Balance, RefundExceedsCapture, balances_from_entries
from services.payments.models import CreditAccount, CreditReservation, LedgerEntry
from shared.messages.contracts import (
    CaptureCredits,
    CreditsCaptured,
    CreditsRefunded,
    CreditsRejected,
    CreditsReserved,
    GrantCredits,
    PaymentSucceeded,
    RefundCredits,
    ReserveCredits,
)
from tests.support.payments import open_session, payments_settings
from tests.support.rig import Rigs, ServiceRig
from tests.support.stripe_sim import signed

T = TypeVar("T")
RESERVATION_LOCK = "SELECT 1 FROM credit_reservations WHERE order_id = :o FOR UPDATE"


@pytest_asyncio.fixture
async def payments_pg(
    fresh_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[ServiceRig]:
    settings = payments_settings(await fresh_database("payments"))
    async with Rigs() as rigs:
        yield await rigs.start(ServiceRig, build, settings)


async def wait_for_lock_waiters(payments: ServiceRig, count: int) -> None:
    """Until `count` other backends are blocked on a lock: both writers are really contending."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with payments.runtime.engine.connect() as conn:
        for _ in range(200):
            waiting = (await conn.execute(query)).scalar_one()
            # PostgreSQL snapshots pg_stat_activity until the transaction ends; end it per look.
            await conn.rollback()
            if waiting >= count:
                return
            await asyncio.sleep(0.025)
    raise AssertionError(f"{count} writers never queued on the row lock")


async def race(
    payments: ServiceRig, lock: str, params: dict[str, str], *writers: Awaitable[T]
) -> list[T]:
    """Runs the writers while a blocker holds `lock`; lets go once all of them are queued, so
    none can decide before every one has started."""
    async with payments.runtime.engine.connect() as blocker:
        transaction = await blocker.begin()
        await blocker.execute(text(lock), params)
        racing = asyncio.gather(*writers)
        await wait_for_lock_waiters(payments, len(writers))
        await transaction.rollback()
        return await racing


async def test_two_concurrent_reserves_that_fit_only_once_reserve_once(
    payments_pg: ServiceRig,
) -> None:
    await payments_pg.deliver(
        GrantCredits(grant_id="g", user_id="ann", credits=100, reason="t"), correlation_id="t"
    )
    first, second = str(uuid.uuid4()), str(uuid.uuid4())

    # Hold the account row so both reserves are parked on it before either can decide.
    await race(
        payments_pg,
        "SELECT 1 FROM credit_accounts WHERE user_id = :u FOR UPDATE",
        {"u": "ann"},
        payments_pg.deliver(
            ReserveCredits(order_id=first, user_id="ann", credits=60), correlation_id=first
        ),
        payments_pg.deliver(
            ReserveCredits(order_id=second, user_id="ann", credits=60), correlation_id=second
        ),
    )

    reserved = await payments_pg.emitted(CreditsReserved.TYPE)
    rejected = await payments_pg.emitted(CreditsRejected.TYPE)
    assert len(reserved) == 1 and len(rejected) == 1
    assert {reserved[0].payload["order_id"], rejected[0].payload["order_id"]} == {first, second}
    assert rejected[0].payload == {
        "order_id": rejected[0].payload["order_id"],
        "reason": "insufficient_credits",
        "available": 40,
    }
    async with payments_pg.runtime.sessionmaker() as session:
        account = await session.get(CreditAccount, "ann")
        entries = (await session.execute(select(LedgerEntry))).scalars().all()
    assert account is not None
    assert Balance(account.available, account.reserved) == Balance(40, 60)
    assert balances_from_entries(entries)["ann"] == Balance(40, 60)


async def test_one_stripe_event_delivered_twice_at_once_succeeds_once(
    payments_pg: ServiceRig,
) -> None:
    order = str(uuid.uuid4())
    session_id = await open_session(payments_pg, order, amount=990)
    event = {
        "id": "evt_pg_dup",
        "object": "event",
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": session_id,
                "object": "checkout.session",
                "payment_status": "paid",
                "amount_total": 990,
                "currency": "eur",
                "payment_intent": "pi_pg_1",
            }
        },
    }
    body = json.dumps(event).encode()
    headers = {"Stripe-Signature": signed(body)}

    responses = await asyncio.gather(
        *(
            payments_pg.http.post("/webhooks/stripe", content=body, headers=headers)
            for _ in range(4)
        )
    )

    assert [r.status_code for r in responses] == [200] * 4
    [succeeded] = await payments_pg.emitted(PaymentSucceeded.TYPE)
    assert succeeded.payload["payment_intent_id"] == "pi_pg_1"
    assert succeeded.correlation_id == order


async def test_concurrent_credit_refunds_of_one_order_never_exceed_its_capture(
    payments_pg: ServiceRig,
) -> None:
    order = str(uuid.uuid4())
    await payments_pg.deliver(
        GrantCredits(grant_id="g-ida", user_id="ida", credits=100, reason="t"), correlation_id="t"
    )
    await payments_pg.deliver(
        ReserveCredits(order_id=order, user_id="ida", credits=100), correlation_id=order
    )
    await payments_pg.deliver(
        CaptureCredits(order_id=order, user_id="ida", credits=100), correlation_id=order
    )

    async def refund(key: str) -> BaseException | None:
        command = RefundCredits(
            order_id=order, user_id="ida", refund_key=key, credits=40, reason="t"
        )
        try:
            await payments_pg.deliver(command, correlation_id=order)
        except RefundExceedsCapture as exc:
            return exc
        return None

    # Hold the reservation row so all three refunds queue on it before any can decide.
    outcomes = await race(
        payments_pg, RESERVATION_LOCK, {"o": order}, refund("a"), refund("b"), refund("c")
    )

    assert sum(outcome is None for outcome in outcomes) == 2
    assert len(await payments_pg.emitted(CreditsRefunded.TYPE)) == 2
    async with payments_pg.runtime.sessionmaker() as session:
        account = await session.get(CreditAccount, "ida")
        entries = (await session.execute(select(LedgerEntry))).scalars().all()
    assert account is not None and Balance(account.available, account.reserved) == Balance(80, 0)
    assert balances_from_entries(entries)["ida"] == Balance(80, 0)


async def ledger_of(payments: ServiceRig, user_id: str) -> tuple[Balance, list[LedgerEntry]]:
    async with payments.runtime.sessionmaker() as session:
        account = await session.get(CreditAccount, user_id)
        stmt = select(LedgerEntry).where(LedgerEntry.user_id == user_id).order_by(LedgerEntry.id)
        entries = list((await session.execute(stmt)).scalars())
    assert account is not None
    cached = Balance(account.available, account.reserved)
    assert balances_from_entries(entries)[user_id] == cached
    return cached, entries


async def reserve_one_order_twice_at_once(
    payments: ServiceRig, user_id: str, *, granted: int, reserved: int
) -> str:
    """Two ReserveCredits of one new order (two message ids) contending; returns the order."""
    order = str(uuid.uuid4())
    grant = GrantCredits(grant_id=f"g-{user_id}", user_id=user_id, credits=granted, reason="t")
    await payments.deliver(grant, correlation_id="t")
    command = ReserveCredits(order_id=order, user_id=user_id, credits=reserved)
    # The whole table, as an UPDATE that matches no row (too few credits) takes no row lock:
    # the first reserve waits with its claim made, the second waits on that claim.
    await race(
        payments,
        "LOCK TABLE credit_accounts IN EXCLUSIVE MODE",
        {},
        payments.deliver(command, correlation_id=order),
        payments.deliver(command, correlation_id=order),
    )
    return order


async def test_one_order_reserved_twice_at_once_holds_its_credits_once(
    payments_pg: ServiceRig,
) -> None:
    await reserve_one_order_twice_at_once(payments_pg, "kai", granted=100, reserved=60)

    replies = await payments_pg.emitted(CreditsReserved.TYPE)
    assert [r.payload["credits"] for r in replies] == [60, 60]
    balance, entries = await ledger_of(payments_pg, "kai")
    assert balance == Balance(40, 60)
    assert [e.kind for e in entries] == ["grant", "reserve"]


async def test_one_order_reserved_twice_at_once_beyond_the_balance_keeps_nothing(
    payments_pg: ServiceRig,
) -> None:
    order = await reserve_one_order_twice_at_once(payments_pg, "lou", granted=50, reserved=60)

    rejected = await payments_pg.emitted(CreditsRejected.TYPE)
    assert [r.payload["available"] for r in rejected] == [50, 50]
    assert await payments_pg.emitted(CreditsReserved.TYPE) == []
    async with payments_pg.runtime.sessionmaker() as session:
        assert await session.get(CreditReservation, order) is None
    balance, entries = await ledger_of(payments_pg, "lou")
    assert balance == Balance(50, 0)
    assert [e.kind for e in entries] == ["grant"]


async def test_one_order_captured_twice_at_once_is_spent_once(
    payments_pg: ServiceRig,
) -> None:
    order = str(uuid.uuid4())
    await payments_pg.deliver(
        GrantCredits(grant_id="g-max", user_id="max", credits=100, reason="t"), correlation_id="t"
    )
    await payments_pg.deliver(
        ReserveCredits(order_id=order, user_id="max", credits=60), correlation_id=order
    )
    command = CaptureCredits(order_id=order, user_id="max", credits=45)

    # Hold the reservation row so both captures queue on it before either can decide.
    await race(
        payments_pg,
        RESERVATION_LOCK,
        {"o": order},
        payments_pg.deliver(command, correlation_id=order),
        payments_pg.deliver(command, correlation_id=order),
    )

    captured = await payments_pg.emitted(CreditsCaptured.TYPE)
    assert [c.payload["credits"] for c in captured] == [45, 45]
    balance, entries = await ledger_of(payments_pg, "max")
    assert balance == Balance(55, 0)
    assert [e.kind for e in entries] == ["grant", "reserve", "capture", "release"]
    async with payments_pg.runtime.sessionmaker() as session:
        held = await session.get(CreditReservation, order)
    assert held is not None and (held.status, held.captured, held.refunded) == ("captured", 45, 0)
