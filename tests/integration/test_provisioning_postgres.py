"""The provisioning service on real PostgreSQL: its migration, CreateJob and ProvisionOrder
(with the server panel simulator over HTTP), concurrent deliveries, and the database's own
guard on entitlements."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError

from services.provisioning import repository
from services.provisioning.bootstrap import build
from services.provisioning.models import Entitlement, Job
from services.provisioning.provisioners import (
    ItemOutcome,
    ItemToProvision,
    ProvisionContext,
    SessionPackageProvisioner,
)
from shared.messages import contracts as c
from shared.runtime import ServiceRuntime
from tests.support.provisioning import Panel, ProvisioningRig, provisioning_settings, served_panel
from tests.support.rig import Rigs


@pytest.fixture(scope="module")
def panel() -> Iterator[Panel]:
    with served_panel() as served:
        yield served


@pytest_asyncio.fixture(loop_scope="session")
async def provisioning(
    fresh_database: Callable[[str], Awaitable[str]], panel: Panel
) -> AsyncIterator[ProvisioningRig]:
    database_url = await fresh_database("provisioning")
    async with Rigs() as rigs:
        settings = provisioning_settings(database_url, panel_url=panel.url)
        yield await rigs.start(ProvisioningRig, build, settings)


def line(line_no: int, kind: c.ItemKind, item_id: str, units_per_item: int = 1) -> c.CheckoutLine:
    return c.CheckoutLine(
        line_no=line_no,
        item_id=item_id,
        kind=kind,
        name=item_id,
        quantity=2,
        unit_price=500,
        units_per_item=units_per_item,
        paid_with="money",
    )


LINES = (
    line(1, "session_package", "pkg-5", units_per_item=5),
    line(2, "server_plan", "srv-small"),
    line(3, "server_plan", "srv-doomed"),
    line(4, "credit_pack", "credits-50", units_per_item=50),
    line(5, "service_job", "cleaning"),
)


async def test_create_and_provision_a_mixed_order(
    provisioning: ProvisioningRig, panel: Panel
) -> None:
    order_id = str(uuid.uuid4())
    create = c.CreateJob(order_id=order_id, user_id="alice", lines=LINES)
    await provisioning.deliver(create, correlation_id=order_id)
    await provisioning.deliver(c.ProvisionOrder(order_id=order_id), correlation_id=order_id)

    created, grant, provisioned = await provisioning.messages_for(order_id)
    assert isinstance(created, c.JobCreated)
    assert grant == c.GrantCredits(
        grant_id=f"{order_id}:4",
        user_id="alice",
        credits=100,
        reason="credit pack",
        order_id=order_id,
    )
    assert isinstance(provisioned, c.OrderProvisionedV2) and provisioned.job_id == created.job_id
    assert [(r.line_no, r.status) for r in provisioned.results] == [
        (1, "delivered"),
        (2, "delivered"),
        (3, "failed"),
        (4, "delivered"),
        (5, "scheduled"),
    ]
    async with provisioning.runtime.sessionmaker() as session:
        job = await repository.job_by_order(session, order_id)
        sessions = await session.scalar(
            select(func.sum(Entitlement.sessions)).where(Entitlement.order_id == order_id)
        )
    assert job is not None and job.status == "partially_done"
    assert job.due_at is not None and job.due_at > datetime.now(UTC)
    assert sessions == 10
    assert panel.state.servers[job.items[1].external_ref or ""]["order_id"] == order_id


async def test_concurrent_duplicates_make_one_job_and_one_delivery(
    provisioning: ProvisioningRig, panel: Panel
) -> None:
    order_id = str(uuid.uuid4())
    create = c.CreateJob(order_id=order_id, user_id="bob", lines=LINES[:2])
    await asyncio.gather(*(provisioning.deliver(create, correlation_id=order_id) for _ in range(4)))
    provision = c.ProvisionOrder(order_id=order_id)
    await asyncio.gather(
        *(provisioning.deliver(provision, correlation_id=order_id) for _ in range(4))
    )

    messages = await provisioning.messages_for(order_id)
    created = {m.job_id for m in messages if isinstance(m, c.JobCreated)}
    replies = [m for m in messages if isinstance(m, c.OrderProvisionedV2)]
    assert len(created) == 1 and len(replies) == 4
    assert all(r == replies[0] for r in replies)
    assert panel.state.requests_by_key[f"{order_id}:2"] == 1
    async with provisioning.runtime.sessionmaker() as session:
        jobs = await session.scalar(
            select(func.count()).select_from(Job).where(Job.order_id == order_id)
        )
        grants = await session.scalar(
            select(func.count()).select_from(Entitlement).where(Entitlement.order_id == order_id)
        )
    assert (jobs, grants) == (1, 1)


async def test_the_database_refuses_an_entitlement_without_sessions(
    provisioning: ProvisioningRig,
) -> None:
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "user_id": "alice",
        "order_id": str(uuid.uuid4()),
        "line_no": 1,
        "item_id": "pkg",
        "sessions": 0,
        "created_at": datetime.now(UTC),
    }
    with pytest.raises(IntegrityError, match="ck_entitlements_sessions_positive"):
        async with provisioning.runtime.transaction() as session:
            await session.execute(insert(Entitlement).values(**row))


class HeldPackages:
    """Grants session packages, the first one only once `go` is set: its ProvisionOrder holds
    the job's lock meanwhile."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.go = asyncio.Event()
        self.inner = SessionPackageProvisioner()

    async def provision(self, item: ItemToProvision, ctx: ProvisionContext) -> ItemOutcome:
        self.entered.set()
        await self.go.wait()
        return await self.inner.provision(item, ctx)


async def lock_waiters(runtime: ServiceRuntime) -> int:
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with runtime.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def test_a_provision_order_that_waited_for_another_replays_what_it_stored(
    fresh_database: Callable[[str], Awaitable[str]],
) -> None:
    held = HeldPackages()
    settings = provisioning_settings(await fresh_database("provisioning_held"))
    service = await ProvisioningRig.start(build, settings, provisioners={"session_package": held})
    try:
        order_id = str(uuid.uuid4())
        lines = (line(1, "session_package", "pkg-5", 5), line(2, "session_package", "pkg-1"))
        create = c.CreateJob(order_id=order_id, user_id="cy", lines=lines)
        await service.deliver(create, correlation_id=order_id)
        provision = c.ProvisionOrder(order_id=order_id)
        first = asyncio.ensure_future(service.deliver(provision, correlation_id=order_id))
        await held.entered.wait()  # the first holds the job, waiting to provision
        # The second reads while the first has stored nothing yet, and waits for its lock.
        second = asyncio.ensure_future(service.deliver(provision, correlation_id=order_id))
        for _ in range(200):
            if await lock_waiters(service.runtime) >= 1:
                break
            await asyncio.sleep(0.025)
        else:
            raise AssertionError("the second ProvisionOrder never waited for the first")
        held.go.set()
        await asyncio.gather(first, second)

        messages = await service.messages_for(order_id)
        replies = [m for m in messages if isinstance(m, c.OrderProvisionedV2)]
        assert len(replies) == 2 and replies[0] == replies[1]
        assert [(r.line_no, r.status) for r in replies[0].results] == [
            (1, "delivered"),
            (2, "delivered"),
        ]
        async with service.runtime.sessionmaker() as session:
            grants = await session.scalar(
                select(func.count())
                .select_from(Entitlement)
                .where(Entitlement.order_id == order_id)
            )
        assert grants == 2
    finally:
        await service.stop()
