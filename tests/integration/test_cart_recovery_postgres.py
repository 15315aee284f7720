"""The cart's outcome-inquiry round on real PostgreSQL: its one claiming statement (a locked,
limited sub-select inside an UPDATE … RETURNING), replicas claiming at once taking different
checkouts, and the partial index it scans."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest_asyncio
from sqlalchemy import text

from services.cart import repository as repo
from services.cart.bootstrap import build
from services.cart.models import utcnow
from services.cart.recovery import inquire_silent_checkouts
from shared.messages.contracts import InquireOrder
from tests.support.cart import CartRig, cart_settings
from tests.support.rig import Rigs

LATER = timedelta(seconds=900 + 1)  # past the default outcome_inquiry_after_seconds


@pytest_asyncio.fixture(loop_scope="session")
async def pg_cart(fresh_database: Callable[[str], Awaitable[str]]) -> AsyncIterator[CartRig]:
    settings = cart_settings(await fresh_database("cart_recovery"), db_pool_size=4)
    async with Rigs() as rigs:
        yield await rigs.start(CartRig, build, settings)  # runs the Alembic migrations


async def test_a_silent_checkout_is_asked_about_once_per_interval_on_postgres(
    pg_cart: CartRig,
) -> None:
    _, checkout_id = await pg_cart.checking_out("pg-silent")
    later = utcnow() + LATER

    assert await inquire_silent_checkouts(pg_cart.runtime, now=later) == [checkout_id]
    assert await inquire_silent_checkouts(pg_cart.runtime, now=later) == []

    [asked] = await pg_cart.emitted(InquireOrder.TYPE, correlation_id=checkout_id)
    assert asked.payload["order_id"] == checkout_id


async def test_replicas_claiming_at_once_take_different_checkouts(pg_cart: CartRig) -> None:
    ids = {(await pg_cart.checking_out(f"pg-replica-{n}"))[1] for n in range(3)}
    later = utcnow() + 2 * LATER  # also past the touch of the test before
    first_claimed = asyncio.Event()
    let_go = asyncio.Event()

    async def first_replica() -> set[str]:
        async with pg_cart.runtime.transaction() as db:
            rows = await repo.claim_silent_checkouts(
                db, silent_since=later - LATER, now=later, batch=2
            )
            first_claimed.set()
            await let_go.wait()  # holds its row locks while the other replica claims
        return {row.id for row in rows}

    async def second_replica() -> set[str]:
        await first_claimed.wait()
        try:
            async with pg_cart.runtime.transaction() as db:
                # A plain FOR UPDATE would wait here for the first replica's commit, then
                # find its rows touched; SKIP LOCKED passes them by at once.
                async with asyncio.timeout(5):
                    rows = await repo.claim_silent_checkouts(
                        db, silent_since=later - LATER, now=later, batch=10
                    )
        finally:
            let_go.set()
        return {row.id for row in rows}

    first, second = await asyncio.gather(first_replica(), second_replica())

    assert len(first) == 2 and first | second == ids and not first & second


async def test_the_round_scans_a_partial_index_of_the_requested_checkouts(
    pg_cart: CartRig,
) -> None:
    async with pg_cart.runtime.sessionmaker() as db:
        definition = await db.scalar(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"),
            {"name": "ix_checkouts_requested_updated_at"},
        )
    assert definition is not None
    assert "(updated_at)" in definition and "WHERE" in definition and "requested" in definition
