"""Money refunds on real PostgreSQL, where replicas really run at once: a refund's failure
learnt by two replicas at once is announced once and gives its amount back once; a failure
Stripe reports while the refund's own answer is on its way is announced after that answer;
replicas reconciling at once ask Stripe about each pending refund once; and the revision that
brought `rejected` keeps the refunds a deployed database holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from services.payments import recovery
from services.payments.bootstrap import MIGRATIONS, build
from shared.db import make_engine
from shared.messages.contracts import PaymentRefunded, RefundFailed
from tests.support.migrations import migrated_to
from tests.support.payments import (
    behind_a_held_lock,
    forward,
    paid_order,
    refund_outcomes,
    refund_payment,
    settings_on_sim,
    stored_refund,
    stored_session,
)
from tests.support.rig import Rigs, ServiceRig
from tests.support.stripe_sim import (
    Sim,
    running_sim,
    sent_events,
    webhook_receiver,
    webhooks_of,
    with_answer_held,
)

FreshDatabase = Callable[[str], Awaitable[str]]
BEFORE_REJECTED = "3c0a411a3aad"
REFUND_LOCK = "SELECT 1 FROM refunds WHERE stripe_refund_id = :r FOR UPDATE"


@pytest.fixture(scope="module")
def stripe_sim() -> Iterator[Sim]:
    with webhook_receiver() as receiver, running_sim(receiver=receiver) as sim:
        yield sim


@pytest_asyncio.fixture
async def replicas(
    fresh_database: FreshDatabase, stripe_sim: Sim
) -> AsyncIterator[tuple[ServiceRig, ServiceRig]]:
    """Two payments replicas on one PostgreSQL database, both talking to the simulator."""
    settings = settings_on_sim(await fresh_database("payments_refunds"), stripe_sim)
    async with Rigs() as rigs:
        yield (
            await rigs.start(ServiceRig, build, settings),
            await rigs.start(ServiceRig, build, settings),
        )


async def refund_id_of(payments: ServiceRig, order: str, key: str) -> str:
    refund_id = (await stored_refund(payments, order, key)).stripe_refund_id
    assert refund_id is not None
    return refund_id


async def test_two_replicas_told_of_one_refund_failure_at_once_announce_it_and_give_back_once(
    replicas: tuple[ServiceRig, ServiceRig], stripe_sim: Sim
) -> None:
    one, other = replicas
    order, _, _ = await paid_order(one, stripe_sim)  # 2999 paid
    await one.deliver(refund_payment(order, 1000, "a"), correlation_id=order)
    await one.deliver(refund_payment(order, 500, "b"), correlation_id=order)
    failing = await refund_id_of(one, order, "a")
    await stripe_sim.control(f"refunds/{failing}/fail", {"failure_reason": "lost_or_stolen_card"})
    [failed] = await webhooks_of(stripe_sim, "refund.failed", failing)
    [legacy] = await webhooks_of(stripe_sim, "charge.refund.updated", failing)

    # Two events (two event ids: no dedupe helps), one per replica, queued on the refund's row.
    await behind_a_held_lock(
        one, REFUND_LOCK, {"r": failing}, forward(one, [failed]), forward(other, [legacy])
    )

    [announced] = await one.emitted(RefundFailed.TYPE)
    assert (announced.payload["refund_key"], announced.payload["status"]) == ("a", "failed")
    assert (await stored_session(one, order)).amount_refunded == 500  # only "b" still counts


async def test_a_failure_reported_while_the_refund_is_being_answered_comes_after_the_answer(
    replicas: tuple[ServiceRig, ServiceRig], stripe_sim: Sim
) -> None:
    one, _ = replicas
    order, _, intent = await paid_order(one, stripe_sim)
    command = one.deliver(refund_payment(order, 1000), correlation_id=order)

    # Stripe made the refund, but its answer is held: the row is not stored yet.
    answering = await with_answer_held(
        stripe_sim, command, method="POST", path_prefix="/v1/refunds", seconds=1.0
    )
    [made] = [
        e["data"]["object"]["id"]
        for e in sent_events(stripe_sim, "refund.created")
        if e["data"]["object"]["payment_intent"] == intent
    ]
    await stripe_sim.control(f"refunds/{made}/fail", {"failure_reason": "declined"})
    await forward(one, await webhooks_of(stripe_sim, "refund.failed", made))  # kept for later
    early = await refund_outcomes(one, order)
    await answering

    assert early == []
    assert [kind for kind, _ in await refund_outcomes(one, order)] == [
        PaymentRefunded.TYPE,
        RefundFailed.TYPE,
    ]
    row = await stored_refund(one, order, "failed-lines-2")
    assert (row.status, row.failure_reason) == ("failed", "declined")
    assert (await stored_session(one, order)).amount_refunded == 0


async def test_replicas_reconciling_at_once_ask_stripe_about_each_pending_refund_once(
    replicas: tuple[ServiceRig, ServiceRig], stripe_sim: Sim
) -> None:
    one, other = replicas
    made = []
    for _ in range(3):
        order, _, _ = await paid_order(one, stripe_sim)
        await one.deliver(refund_payment(order, 100), correlation_id=order)
        made.append(await refund_id_of(one, order, "failed-lines-2"))
    for refund_id in made:
        await webhooks_of(stripe_sim, "refund.updated", refund_id)  # succeeded at Stripe
    async with one.runtime.engine.begin() as conn:  # pending here for two hours
        await conn.execute(text("UPDATE refunds SET created_at = now() - interval '2 hours'"))

    rounds = [
        recovery.reconcile_refunds(rig.runtime, rig.runtime.deps.stripe, min_age=timedelta(hours=1))
        for rig in (one, other, one, other)
    ]
    results = await asyncio.gather(*rounds)

    assert sum(result.checked for result in results) == 3
    settled = [change.stripe_refund_id for result in results for change in result.changed]
    assert sorted(settled) == sorted(made)  # each settled once


async def test_the_refund_revision_keeps_what_a_deployed_database_holds(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database("payments_refunds_upgrade")
    await migrated_to(url, MIGRATIONS, BEFORE_REJECTED)
    engine = make_engine(url)
    insert = text(
        "INSERT INTO refunds (order_id, refund_key, stripe_refund_id, amount, status, reason,"
        " trace_id, created_at, updated_at)"
        " VALUES (:o, 'k', :r, 100, :s, 'why', :o, now(), now())"
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(insert, {"o": "old", "r": "re_old", "s": "failed"})
        await migrated_to(url, MIGRATIONS, "head")
        async with engine.begin() as conn:
            await conn.execute(insert, {"o": "new", "r": None, "s": "rejected"})
            kept = await conn.execute(
                text(
                    "SELECT status, failure_reason, reconciled_at FROM refunds WHERE order_id = 'old'"
                )
            )
            assert kept.one() == ("failed", None, None)
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(insert, {"o": "bad", "r": None, "s": "lost"})
    finally:
        await engine.dispose()
