"""RefundCredits: captured credits of undelivered items go back to the shopper, once per refund
key, and never more than the order captured."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from services.payments import ledger
from services.payments.domain import (
    SYSTEM_REVENUE,
    Balance,
    RefundExceedsCapture,
    RefundKeyReused,
    balances_from_entries,
)
from services.payments.models import CreditReservation, LedgerEntry
from shared.memory_bus import MemoryBus
from shared.messages import Envelope
from shared.messages.contracts import (
    CaptureCredits,
    CreditsRefunded,
    GrantCredits,
    RefundCredits,
    ReserveCredits,
)
from tests.support.rig import ServiceRig, new_order_id


async def paid_with_credits(
    payments: ServiceRig, user_id: str, *, reserve: int, capture: int, grant: int = 1000
) -> str:
    """An order whose credits were reserved and captured, as the saga leaves it."""
    order = new_order_id()
    await payments.deliver(
        GrantCredits(grant_id=f"g-{order}", user_id=user_id, credits=grant, reason="t"),
        correlation_id=order,
    )
    await payments.deliver(
        ReserveCredits(order_id=order, user_id=user_id, credits=reserve), correlation_id=order
    )
    await payments.deliver(
        CaptureCredits(order_id=order, user_id=user_id, credits=capture), correlation_id=order
    )
    return order


def refund(order: str, user_id: str, credits: int, key: str = "failed-lines-2") -> RefundCredits:
    return RefundCredits(
        order_id=order, user_id=user_id, refund_key=key, credits=credits, reason="line 2 failed"
    )


async def balance(payments: ServiceRig, user_id: str) -> Balance:
    async with payments.runtime.sessionmaker() as session:
        return await ledger.balance_of(session, user_id)


async def refund_entries(payments: ServiceRig, order: str) -> list[LedgerEntry]:
    stmt = select(LedgerEntry).where(LedgerEntry.order_id == order, LedgerEntry.kind == "refund")
    async with payments.runtime.sessionmaker() as session:
        return list((await session.execute(stmt)).scalars())


async def assert_ledger_matches_cache(payments: ServiceRig, user_id: str) -> None:
    async with payments.runtime.sessionmaker() as session:
        every_entry = list((await session.execute(select(LedgerEntry))).scalars())
    assert balances_from_entries(every_entry)[user_id] == await balance(payments, user_id)


async def test_refunded_credits_move_from_revenue_back_to_available(
    payments: ServiceRig,
) -> None:
    order = await paid_with_credits(payments, "rita", reserve=300, capture=300)
    assert await balance(payments, "rita") == Balance(700, 0)

    await payments.deliver(refund(order, "rita", 120), correlation_id=order)

    [reply] = await payments.emitted(CreditsRefunded.TYPE)
    assert reply.payload == {"order_id": order, "refund_key": "failed-lines-2", "credits": 120}
    assert reply.correlation_id == order
    assert await balance(payments, "rita") == Balance(820, 0)
    [entry] = await refund_entries(payments, order)
    assert (entry.debit_account, entry.credit_account, entry.amount) == (
        SYSTEM_REVENUE,
        "user:rita:available",
        120,
    )
    assert (entry.reference, entry.trace_id, entry.memo) == (
        f"refund:{order}:failed-lines-2",
        order,
        "line 2 failed",
    )
    await assert_ledger_matches_cache(payments, "rita")


async def test_a_repeated_refund_replays_its_reply_and_moves_nothing(
    payments: ServiceRig,
) -> None:
    order = await paid_with_credits(payments, "rolf", reserve=300, capture=300)

    envelope = await payments.deliver(refund(order, "rolf", 100), correlation_id=order)
    await payments.redeliver(envelope)  # the same message: the inbox stops it
    # The saga sends it again:
    await payments.deliver(refund(order, "rolf", 100), correlation_id=order)

    replies = await payments.emitted(CreditsRefunded.TYPE)
    assert [r.payload["credits"] for r in replies] == [100, 100]
    assert len(await refund_entries(payments, order)) == 1
    assert await balance(payments, "rolf") == Balance(800, 0)


async def test_refunds_of_one_order_never_exceed_what_it_captured(
    payments: ServiceRig,
) -> None:
    # 500 reserved, 400 captured: 100 went back at capture and are not refundable again.
    order = await paid_with_credits(payments, "ruth", reserve=500, capture=400)
    await payments.deliver(refund(order, "ruth", 250, key="a"), correlation_id=order)
    await payments.deliver(refund(order, "ruth", 150, key="b"), correlation_id=order)

    with pytest.raises(RefundExceedsCapture, match="exceeds"):
        await payments.deliver(refund(order, "ruth", 1, key="c"), correlation_id=order)

    assert [e.amount for e in await refund_entries(payments, order)] == [250, 150]
    assert await balance(payments, "ruth") == Balance(1000, 0)
    async with payments.runtime.sessionmaker() as session:
        held = await session.get(CreditReservation, order)
    assert held is not None and (held.captured, held.refunded) == (400, 400)
    await assert_ledger_matches_cache(payments, "ruth")


async def test_nothing_is_refunded_for_an_order_that_captured_nothing(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    await payments.deliver(
        GrantCredits(grant_id="g-rex", user_id="rex", credits=50, reason="t"), correlation_id=order
    )
    await payments.deliver(
        ReserveCredits(order_id=order, user_id="rex", credits=50), correlation_id=order
    )

    with pytest.raises(RefundExceedsCapture):  # reserved, never captured
        await payments.deliver(refund(order, "rex", 10), correlation_id=order)
    with pytest.raises(RefundExceedsCapture):  # no such order at all
        await payments.deliver(refund(new_order_id(), "rex", 10), correlation_id=order)

    assert await balance(payments, "rex") == Balance(0, 50)
    assert await payments.emitted(CreditsRefunded.TYPE) == []


async def test_a_refund_to_someone_else_than_the_payer_is_refused(
    payments: ServiceRig,
) -> None:
    order = await paid_with_credits(payments, "rosa", reserve=100, capture=100)

    with pytest.raises(RefundExceedsCapture):
        await payments.deliver(refund(order, "mallory", 100), correlation_id=order)

    assert await balance(payments, "mallory") == Balance()


async def test_a_refund_key_reused_with_another_amount_is_refused(
    payments: ServiceRig,
) -> None:
    order = await paid_with_credits(payments, "remy", reserve=100, capture=100)
    await payments.deliver(refund(order, "remy", 40), correlation_id=order)

    with pytest.raises(RefundKeyReused):
        await payments.deliver(refund(order, "remy", 60), correlation_id=order)

    assert [e.amount for e in await refund_entries(payments, order)] == [40]


async def test_the_same_refund_key_on_two_orders_refunds_both(payments: ServiceRig) -> None:
    first = await paid_with_credits(payments, "rudi", reserve=100, capture=100)
    second = await paid_with_credits(payments, "rudi", reserve=100, capture=100)

    await payments.deliver(refund(first, "rudi", 100, key="late-payment"), correlation_id=first)
    await payments.deliver(refund(second, "rudi", 100, key="late-payment"), correlation_id=second)

    assert len(await payments.emitted(CreditsRefunded.TYPE)) == 2
    assert [e.amount for e in await refund_entries(payments, first)] == [100]
    assert [e.amount for e in await refund_entries(payments, second)] == [100]


async def test_an_excessive_refund_dead_letters_with_its_reason(payments: ServiceRig) -> None:
    bus = payments.runtime.bus
    assert isinstance(bus, MemoryBus)
    order = await paid_with_credits(payments, "rhea", reserve=100, capture=100)

    await bus.publish(Envelope.wrap(refund(order, "rhea", 101), correlation_id=order))

    for _ in range(200):
        if dead := await bus.dead_letters("payments"):
            break
        await asyncio.sleep(0.05)
    [letter] = dead
    assert letter.message_type == RefundCredits.TYPE
    assert "RefundExceedsCapture" in letter.reason and "101 credits" in letter.reason
    assert await payments.emitted(CreditsRefunded.TYPE) == []
    assert await balance(payments, "rhea") == Balance(900, 0)
