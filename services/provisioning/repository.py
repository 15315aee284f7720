"""Queries of the provisioning service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from services.provisioning.domain import JobLine
from services.provisioning.models import Entitlement, Job, JobItem
from shared.db import upsert_insert


async def create_job(
    session: AsyncSession,
    *,
    order_id: str,
    user_id: str,
    lines: Sequence[JobLine],
    now: datetime,
) -> uuid.UUID:
    """Creates the order's job with its items, or returns the id of the job it already has.

    ON CONFLICT on order_id rather than read-then-insert: two concurrent CreateJob deliveries
    can never make two jobs.
    """
    job_id = uuid.uuid4()
    stmt = (
        upsert_insert(session)(Job)
        .values(
            id=job_id,
            order_id=order_id,
            user_id=user_id,
            status="created",
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["order_id"])
    )
    result = await session.execute(stmt)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        existing = await session.execute(select(Job.id).where(Job.order_id == order_id))
        return existing.scalar_one()
    session.add_all(
        JobItem(
            job_id=job_id,
            line_no=line.line_no,
            item_id=line.item_id,
            kind=line.kind,
            name=line.name,
            quantity=line.quantity,
            units_per_item=line.units_per_item,
            status="pending",
            detail="",
        )
        for line in lines
    )
    await session.flush()
    return job_id


async def job_by_order(
    session: AsyncSession, order_id: str, *, for_update: bool = False
) -> Job | None:
    """The order's job with its items; `for_update` serialises handlers of the same order."""
    stmt = select(Job).where(Job.order_id == order_id).options(selectinload(Job.items))
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def add_entitlement(
    session: AsyncSession,
    *,
    user_id: str,
    order_id: str,
    line_no: int,
    item_id: str,
    sessions: int,
    now: datetime,
) -> None:
    """Idempotent on (order_id, line_no): a second grant for the same line is a no-op."""
    stmt = (
        upsert_insert(session)(Entitlement)
        .values(
            id=uuid.uuid4(),
            user_id=user_id,
            order_id=order_id,
            line_no=line_no,
            item_id=item_id,
            sessions=sessions,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["order_id", "line_no"])
    )
    await session.execute(stmt)


async def entitlements_of(session: AsyncSession, user_id: str) -> Sequence[Entitlement]:
    stmt = (
        select(Entitlement)
        .where(Entitlement.user_id == user_id)
        .order_by(Entitlement.created_at, Entitlement.order_id, Entitlement.line_no)
    )
    return (await session.execute(stmt)).scalars().all()
