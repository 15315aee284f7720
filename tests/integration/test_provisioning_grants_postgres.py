"""The credit-grant re-sender on real PostgreSQL, where replicas run it at once: a grant another
transaction holds is skipped rather than waited for (SKIP LOCKED), and two replicas resending
together send each due grant once between them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest_asyncio
from sqlalchemy import select

from services.provisioning.bootstrap import build
from services.provisioning.grant_resender import resend_due_grants
from services.provisioning.models import CreditGrant
from shared.messages import contracts as c
from shared.messages import payload_of
from tests.support.provisioning import ProvisioningRig, line, provisioning_settings
from tests.support.rig import Rigs

# Past the first resend wait (900 s by default) of every grant made by these tests.
LATER = timedelta(hours=1)


@pytest_asyncio.fixture(loop_scope="session")
async def replicas(
    fresh_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[tuple[ProvisioningRig, ProvisioningRig]]:
    """Two provisioning processes on one PostgreSQL database, as two replicas run."""
    settings = provisioning_settings(await fresh_database("provisioning_grants"))
    async with Rigs() as rigs:
        first = await rigs.start(ProvisioningRig, build, settings)
        second = await rigs.start(ProvisioningRig, build, settings)
        yield first, second


async def credit_packs_provisioned(rig: ProvisioningRig, count: int) -> list[str]:
    """`count` orders of one credit-pack line each, provisioned; their grant ids."""
    grant_ids = []
    for _ in range(count):
        order_id = str(uuid.uuid4())
        lines = (line(1, "credit_pack", "credits-50", units_per_item=50),)
        await rig.deliver(
            c.CreateJob(order_id=order_id, user_id="gus", lines=lines), correlation_id=order_id
        )
        await rig.deliver(c.ProvisionOrder(order_id=order_id), correlation_id=order_id)
        grant_ids.append(f"{order_id}:1")
    return grant_ids


async def sends_of(rig: ProvisioningRig, grant_ids: list[str]) -> dict[str, int]:
    """How many GrantCredits the service wrote to its outbox for each grant."""
    sends = dict.fromkeys(grant_ids, 0)
    for envelope in await rig.emitted(c.GrantCredits.TYPE):
        grant = payload_of(envelope)
        if isinstance(grant, c.GrantCredits) and grant.grant_id in sends:
            sends[grant.grant_id] += 1
    return sends


async def test_a_grant_another_transaction_holds_is_skipped_not_waited_for(
    replicas: tuple[ProvisioningRig, ProvisioningRig],
) -> None:
    rig, _ = replicas
    held, free = await credit_packs_provisioned(rig, 2)
    later = datetime.now(UTC) + LATER

    async with rig.runtime.transaction() as db:
        # Another replica's round (or a CreditsGranted being applied) holds this grant's row.
        await db.execute(
            select(CreditGrant.grant_id).where(CreditGrant.grant_id == held).with_for_update()
        )
        async with asyncio.timeout(10):  # a plain FOR UPDATE would wait here until the commit
            assert await resend_due_grants(rig.runtime, now=later) == 1
    assert await sends_of(rig, [held, free]) == {held: 1, free: 2}

    # Released, the skipped grant is sent by the next round; the one just sent is not due.
    assert await resend_due_grants(rig.runtime, now=later) == 1
    assert await sends_of(rig, [held, free]) == {held: 2, free: 2}


async def test_replicas_resending_at_once_send_each_due_grant_once(
    replicas: tuple[ProvisioningRig, ProvisioningRig],
) -> None:
    first, second = replicas
    grant_ids = await credit_packs_provisioned(first, 12)
    later = datetime.now(UTC) + LATER

    # Small batches, so the two replicas' rounds interleave over several transactions.
    counts = await asyncio.gather(
        resend_due_grants(first.runtime, now=later, batch=3),
        resend_due_grants(second.runtime, now=later, batch=3),
    )

    assert sum(counts) == 12
    # Both replicas write to the one outbox table: every grant sent twice in all, not three times.
    assert await sends_of(first, grant_ids) == dict.fromkeys(grant_ids, 2)
    async with first.runtime.sessionmaker() as db:
        rows = (
            await db.execute(select(CreditGrant.sends).where(CreditGrant.grant_id.in_(grant_ids)))
        ).scalars()
        assert set(rows) == {2}
