"""Disputes and foreign events on real PostgreSQL, where replicas really run at once: two
replicas told different things about one dispute at the same moment keep one row with Stripe's
newest status; and the revision that brought disputes keeps the events a deployed database
holds, a foreign one among them then marked ignored by the replay, not replayed for a day."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest_asyncio
from sqlalchemy import text

from services.payments import recovery
from services.payments.bootstrap import MIGRATIONS, build
from shared.db import make_engine
from tests.support.migrations import migrated_to
from tests.support.payments import (
    behind_a_held_lock,
    completed,
    open_session,
    payments_settings,
    post_webhook,
)
from tests.support.payments_stripe_events import dispute, post_event, stored_dispute
from tests.support.rig import Rigs, ServiceRig, new_order_id
from tests.support.stripe_sim import signed, stripe_event

FreshDatabase = Callable[[str], Awaitable[str]]
BEFORE_DISPUTES = "05c0d3ba2baf"
# Another transaction writing the dispute's row and holding it: the replicas' inserts queue on it.
DISPUTE_BEING_WRITTEN = (
    "INSERT INTO disputes (dispute_id, order_id, payment_intent_id, amount, currency, reason,"
    " status, created_at, status_at, updated_at)"
    " VALUES (:d, 'other', 'pi', 1, 'eur', 'general', 'needs_response', now(), now(), now())"
)


@pytest_asyncio.fixture
async def replicas(fresh_database: FreshDatabase) -> AsyncIterator[tuple[ServiceRig, ServiceRig]]:
    settings = payments_settings(await fresh_database("payments_disputes"))
    async with Rigs() as rigs:
        yield (
            await rigs.start(ServiceRig, build, settings),
            await rigs.start(ServiceRig, build, settings),
        )


async def test_two_replicas_told_of_one_dispute_at_once_keep_its_newest_status(
    replicas: tuple[ServiceRig, ServiceRig],
) -> None:
    one, other = replicas
    order = new_order_id()
    session_id = await open_session(one, order, amount=2999)
    body = stripe_event("checkout.session.completed", completed(session_id, order, amount=2999))
    assert (await post_webhook(one, body, signed(body)))[0] == 200

    for n in range(4):
        dispute_id = f"dp_race_{n}"
        opened = dispute("pi_test_123", dispute_id=dispute_id)
        closed = dispute("pi_test_123", dispute_id=dispute_id, status="lost")
        # Each replica told one thing, at once: both inserts queue behind another writer of the
        # row, then one inserts and the other finds its row. Who goes first varies by round.
        writers = [
            post_event(one, "charge.dispute.created", opened, created=1_700_000_000),
            post_event(other, "charge.dispute.closed", closed, created=1_700_000_060),
        ]
        await behind_a_held_lock(
            one, DISPUTE_BEING_WRITTEN, {"d": dispute_id}, *(writers if n % 2 else writers[::-1])
        )

        row = await stored_dispute(one, dispute_id)
        assert (row.status, row.order_id, row.payment_intent_id) == ("lost", order, "pi_test_123")
    async with one.runtime.engine.connect() as conn:
        count = await conn.execute(text("SELECT count(*) FROM disputes"))
        assert count.scalar_one() == 4


async def test_the_dispute_revision_keeps_stored_events_and_the_replay_ignores_foreign_ones(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database("payments_disputes_upgrade")
    await migrated_to(url, MIGRATIONS, BEFORE_DISPUTES)
    foreign = {
        "id": "evt_old_foreign",
        "type": "checkout.session.completed",
        "created": 1_700_000_000,
        "data": {"object": {"id": "cs_test_plink", "metadata": {}, "payment_status": "paid"}},
    }
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO stripe_events (event_id, type, object_id, payload, received_at)"
                    " VALUES ('evt_old_foreign', 'checkout.session.completed', 'cs_test_plink',"
                    " :payload, now())"
                ),
                {"payload": json.dumps(foreign)},
            )
    finally:
        await engine.dispose()

    async with Rigs() as rigs:
        payments = await rigs.start(ServiceRig, build, payments_settings(url))  # migrates
        replayed = await recovery.replay_events(payments.runtime)
        async with payments.runtime.engine.connect() as conn:
            row = await conn.execute(
                text(
                    "SELECT processed_at IS NOT NULL, ignored_reason FROM stripe_events"
                    " WHERE event_id = 'evt_old_foreign'"
                )
            )
            kept = row.one()

    assert (replayed.ignored, replayed.unprocessed) == (["evt_old_foreign"], [])
    assert tuple(kept) == (True, "checkout session of no order of ours")
