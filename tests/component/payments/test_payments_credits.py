"""Credit commands through the dispatcher on SQLite: what is emitted and what the ledger holds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy import select

from services.payments import ledger
from services.payments.bootstrap import build
from services.payments.domain import (
    Balance,
    CaptureExceedsReservation,
    ReservationNotCapturable,
    balances_from_entries,
)
from services.payments.models import CreditAccount, CreditReservation, LedgerEntry
from shared.messages.contracts import (
    CaptureCredits,
    CreditsCaptured,
    CreditsGranted,
    CreditsRejected,
    CreditsReleased,
    CreditsReserved,
    GrantCredits,
    ReleaseCredits,
    ReserveCredits,
)
from tests.support.payments import payments_settings
from tests.support.rig import ServiceRig, new_order_id, sqlite_url


async def grant(payments: ServiceRig, user_id: str, credits: int, grant_id: str = "") -> None:
    grant_id = grant_id or f"g-{user_id}-{credits}-{random.random()}"
    await payments.deliver(
        GrantCredits(grant_id=grant_id, user_id=user_id, credits=credits, reason="test"),
        correlation_id="grants",
    )


async def balance(payments: ServiceRig, user_id: str) -> Balance:
    async with payments.runtime.sessionmaker() as session:
        return await ledger.balance_of(session, user_id)


async def entries(payments: ServiceRig, user_id: str | None = None) -> list[LedgerEntry]:
    stmt = select(LedgerEntry).order_by(LedgerEntry.id)
    if user_id is not None:
        stmt = stmt.where(LedgerEntry.user_id == user_id)
    async with payments.runtime.sessionmaker() as session:
        return list((await session.execute(stmt)).scalars())


async def assert_cache_matches_ledger(payments: ServiceRig) -> None:
    async with payments.runtime.sessionmaker() as session:
        accounts = (await session.execute(select(CreditAccount))).scalars().all()
    recomputed = balances_from_entries(await entries(payments))
    cached = {a.user_id: Balance(a.available, a.reserved) for a in accounts}
    assert cached == recomputed


async def test_reserve_holds_credits_and_replies_reserved(payments: ServiceRig) -> None:
    order = new_order_id()
    await grant(payments, "alice", 100)

    await payments.deliver(
        ReserveCredits(order_id=order, user_id="alice", credits=30), correlation_id=order
    )

    replies = await payments.emitted(CreditsReserved.TYPE)
    assert [r.payload for r in replies] == [{"order_id": order, "credits": 30}]
    assert replies[0].correlation_id == order
    assert await balance(payments, "alice") == Balance(available=70, reserved=30)
    reserve_entry = (await entries(payments, "alice"))[-1]
    assert (reserve_entry.kind, reserve_entry.reference, reserve_entry.trace_id) == (
        "reserve",
        f"reserve:{order}",
        order,
    )
    await assert_cache_matches_ledger(payments)


async def test_reserve_beyond_the_balance_is_rejected_with_what_is_available(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    await grant(payments, "bob", 20)

    await payments.deliver(
        ReserveCredits(order_id=order, user_id="bob", credits=21), correlation_id=order
    )

    assert await payments.emitted(CreditsReserved.TYPE) == []
    [rejected] = await payments.emitted(CreditsRejected.TYPE)
    assert rejected.payload == {
        "order_id": order,
        "reason": "insufficient_credits",
        "available": 20,
    }
    assert await balance(payments, "bob") == Balance(available=20, reserved=0)


async def test_a_rejected_reserve_leaves_nothing_so_its_retry_can_hold_credits_later(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    await grant(payments, "bea", 20)
    command = ReserveCredits(order_id=order, user_id="bea", credits=30)

    await payments.deliver(command, correlation_id=order)
    async with payments.runtime.sessionmaker() as session:
        assert await session.get(CreditReservation, order) is None
    await grant(payments, "bea", 10)
    await payments.deliver(command, correlation_id=order)

    assert [r.payload["credits"] for r in await payments.emitted(CreditsReserved.TYPE)] == [30]
    assert len(await payments.emitted(CreditsRejected.TYPE)) == 1
    assert await balance(payments, "bea") == Balance(available=0, reserved=30)
    await assert_cache_matches_ledger(payments)


async def test_reserve_for_a_user_without_an_account_is_rejected(payments: ServiceRig) -> None:
    order = new_order_id()

    await payments.deliver(
        ReserveCredits(order_id=order, user_id="nobody", credits=1), correlation_id=order
    )

    [rejected] = await payments.emitted(CreditsRejected.TYPE)
    assert rejected.payload["available"] == 0


async def test_a_redelivered_or_repeated_reserve_holds_credits_once(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    await grant(payments, "carol", 50)
    command = ReserveCredits(order_id=order, user_id="carol", credits=40)

    envelope = await payments.deliver(command, correlation_id=order)
    await payments.redeliver(envelope)  # same message id: the inbox drops it
    # A new message id: the reservation row replays.
    await payments.deliver(command, correlation_id=order)

    assert [r.payload["credits"] for r in await payments.emitted(CreditsReserved.TYPE)] == [40, 40]
    assert await balance(payments, "carol") == Balance(available=10, reserved=40)
    assert [e.kind for e in await entries(payments, "carol")] == ["grant", "reserve"]


async def test_capture_spends_the_reservation_once(payments: ServiceRig) -> None:
    order = new_order_id()
    await grant(payments, "dave", 100)
    await payments.deliver(
        ReserveCredits(order_id=order, user_id="dave", credits=60), correlation_id=order
    )

    capture = CaptureCredits(order_id=order, user_id="dave", credits=60)
    await payments.deliver(capture, correlation_id=order)
    await payments.deliver(capture, correlation_id=order)

    captured = await payments.emitted(CreditsCaptured.TYPE)
    assert [c.payload for c in captured] == [{"order_id": order, "credits": 60}] * 2
    assert await balance(payments, "dave") == Balance(available=40, reserved=0)
    assert [e.kind for e in await entries(payments, "dave")] == ["grant", "reserve", "capture"]
    await assert_cache_matches_ledger(payments)


async def test_capturing_part_of_a_reservation_returns_the_rest(payments: ServiceRig) -> None:
    order = new_order_id()
    await grant(payments, "erin", 100)
    await payments.deliver(
        ReserveCredits(order_id=order, user_id="erin", credits=60), correlation_id=order
    )

    await payments.deliver(
        CaptureCredits(order_id=order, user_id="erin", credits=25), correlation_id=order
    )

    [captured] = await payments.emitted(CreditsCaptured.TYPE)
    assert captured.payload["credits"] == 25
    assert await balance(payments, "erin") == Balance(available=75, reserved=0)
    await assert_cache_matches_ledger(payments)


async def test_capturing_more_than_was_reserved_fails_and_changes_nothing(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    await grant(payments, "eli", 100)
    await payments.deliver(
        ReserveCredits(order_id=order, user_id="eli", credits=40), correlation_id=order
    )

    with pytest.raises(CaptureExceedsReservation):
        await payments.deliver(
            CaptureCredits(order_id=order, user_id="eli", credits=41), correlation_id=order
        )
    await payments.deliver(
        CaptureCredits(order_id=order, user_id="eli", credits=40), correlation_id=order
    )

    [captured] = await payments.emitted(CreditsCaptured.TYPE)
    assert captured.payload["credits"] == 40
    assert await balance(payments, "eli") == Balance(available=60, reserved=0)
    async with payments.runtime.sessionmaker() as session:
        held = await session.get(CreditReservation, order)
    assert held is not None and (held.status, held.captured) == ("captured", 40)
    await assert_cache_matches_ledger(payments)


async def test_capture_without_a_reservation_fails_loudly(payments: ServiceRig) -> None:
    order = new_order_id()

    with pytest.raises(ReservationNotCapturable):
        await payments.deliver(
            CaptureCredits(order_id=order, user_id="x", credits=1), correlation_id=order
        )
    assert await payments.emitted(CreditsCaptured.TYPE) == []


async def test_release_returns_reserved_credits_once(payments: ServiceRig) -> None:
    order = new_order_id()
    await grant(payments, "fred", 30)
    await payments.deliver(
        ReserveCredits(order_id=order, user_id="fred", credits=30), correlation_id=order
    )

    release = ReleaseCredits(order_id=order, user_id="fred")
    await payments.deliver(release, correlation_id=order)
    await payments.deliver(release, correlation_id=order)

    released = await payments.emitted(CreditsReleased.TYPE)
    assert [r.payload["credits"] for r in released] == [30, 30]
    assert await balance(payments, "fred") == Balance(available=30, reserved=0)
    assert [e.kind for e in await entries(payments, "fred")] == ["grant", "reserve", "release"]
    await assert_cache_matches_ledger(payments)


async def test_release_without_a_reservation_releases_nothing_and_blocks_a_late_reserve(
    payments: ServiceRig,
) -> None:
    order = new_order_id()
    await grant(payments, "gina", 10)

    await payments.deliver(ReleaseCredits(order_id=order, user_id="gina"), correlation_id=order)
    await payments.deliver(
        ReserveCredits(order_id=order, user_id="gina", credits=5), correlation_id=order
    )

    [released] = await payments.emitted(CreditsReleased.TYPE)
    assert released.payload == {"order_id": order, "credits": 0}
    [rejected] = await payments.emitted(CreditsRejected.TYPE)
    assert rejected.payload["reason"] == "reservation_closed"
    assert await balance(payments, "gina") == Balance(available=10, reserved=0)


async def test_release_after_capture_releases_nothing(payments: ServiceRig) -> None:
    order = new_order_id()
    await grant(payments, "hank", 10)
    await payments.deliver(
        ReserveCredits(order_id=order, user_id="hank", credits=10), correlation_id=order
    )
    await payments.deliver(
        CaptureCredits(order_id=order, user_id="hank", credits=10), correlation_id=order
    )

    await payments.deliver(ReleaseCredits(order_id=order, user_id="hank"), correlation_id=order)

    [released] = await payments.emitted(CreditsReleased.TYPE)
    assert released.payload["credits"] == 0
    assert await balance(payments, "hank") == Balance(available=0, reserved=0)


async def test_a_grant_is_applied_once_per_grant_id(payments: ServiceRig) -> None:
    command = GrantCredits(grant_id="pack-1", user_id="ivy", credits=25, reason="credit pack")

    envelope = await payments.deliver(command, correlation_id="t-1")
    await payments.redeliver(envelope)
    await payments.deliver(command, correlation_id="t-1")

    assert await balance(payments, "ivy") == Balance(available=25, reserved=0)
    [entry] = await entries(payments, "ivy")
    assert (entry.reference, entry.trace_id, entry.memo) == ("grant:pack-1", "t-1", "credit pack")
    granted = await payments.emitted(CreditsGranted.TYPE)
    assert len(granted) == 2  # once per message that asked; the effect happened once


async def test_random_command_sequences_keep_the_cache_equal_to_the_ledger(
    payments: ServiceRig,
) -> None:
    rng = random.Random(20261123)
    orders = [new_order_id() for _ in range(6)]
    for step in range(120):
        user = rng.choice(["u1", "u2"])
        order = rng.choice(orders)
        kind = rng.choice(["grant", "reserve", "reserve", "capture", "release"])
        if kind == "grant":
            await grant(payments, user, rng.randint(1, 40), grant_id=f"g{step}")
        elif kind == "reserve":
            cmd = ReserveCredits(order_id=order, user_id=user, credits=rng.randint(1, 50))
            await payments.deliver(cmd, correlation_id=order)
        elif kind == "capture":
            async with payments.runtime.sessionmaker() as session:
                held = await session.get(CreditReservation, order)
            if held is not None and held.status in ("reserved", "captured") and held.credits:
                cmd_c = CaptureCredits(
                    order_id=order, user_id=held.user_id, credits=rng.randint(1, held.credits)
                )
                await payments.deliver(cmd_c, correlation_id=order)
        else:
            await payments.deliver(
                ReleaseCredits(order_id=order, user_id=user), correlation_id=order
            )
        await assert_cache_matches_ledger(payments)


async def test_seed_credits_are_granted_once_across_restarts(tmp_path: Path) -> None:
    settings = payments_settings(
        sqlite_url(tmp_path / "payments.db"), seed_credits="demo-shopper=500,alice=100"
    )
    for _ in range(2):
        payments = await ServiceRig.start(build, settings)
        try:
            assert await balance(payments, "demo-shopper") == Balance(available=500)
            assert await balance(payments, "alice") == Balance(available=100)
        finally:
            await payments.stop()
    async with payments.runtime.sessionmaker() as session:
        refs = (await session.execute(select(LedgerEntry.reference))).scalars().all()
    await payments.runtime.engine.dispose()
    assert sorted(refs) == ["grant:seed:alice", "grant:seed:demo-shopper"]
