"""Queries of the provisioning service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, joinedload

from services.provisioning.domain import JobLine
from services.provisioning.models import Entitlement, Job, JobItem
from shared.db import upsert_insert


@dataclass(frozen=True)
class StoredItem(JobLine):
    """A job item as stored: its line and, once provisioned, the outcome."""

    status: str
    detail: str
    external_ref: str | None


@dataclass(frozen=True)
class StoredJob:
    id: uuid.UUID
    order_id: str
    user_id: str
    status: str
    due_at: datetime | None
    items: tuple[StoredItem, ...]


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
    # One multi-row INSERT: the rows are only written, never used as objects here.
    await session.execute(
        insert(JobItem).values(
            [
                {
                    "job_id": job_id,
                    "line_no": line.line_no,
                    "item_id": line.item_id,
                    "kind": line.kind,
                    "name": line.name,
                    "quantity": line.quantity,
                    "units_per_item": line.units_per_item,
                    "status": "pending",
                    "detail": "",
                }
                for line in lines
            ]
        )
    )
    return job_id


async def job_by_order(session: AsyncSession, order_id: str) -> Job | None:
    """The order's job with its items (one joined query), for reading."""
    stmt = select(Job).where(Job.order_id == order_id).options(joinedload(Job.items))
    return (await session.execute(stmt)).unique().scalar_one_or_none()


_ITEM_COLUMNS = (
    JobItem.line_no,
    JobItem.item_id,
    JobItem.kind,
    JobItem.name,
    JobItem.quantity,
    JobItem.units_per_item,
    JobItem.status,
    JobItem.detail,
    JobItem.external_ref,
)


async def locked_job(session: AsyncSession, order_id: str) -> StoredJob | None:
    """The order's job with its items in one query, locked until commit: handlers of the same
    order queue here. The item rows are locked too, not only the job's: a row that changed
    while this query waited is then returned as committed, never as the snapshot saw it.
    (An inner join: a job always has items, new_job refuses an empty one.)"""
    stmt = (
        select(Job.id, Job.order_id, Job.user_id, Job.status, Job.due_at, *_ITEM_COLUMNS)
        .join(JobItem, JobItem.job_id == Job.id)
        .where(Job.order_id == order_id)
        .order_by(JobItem.line_no)
        .with_for_update()
    )
    rows = (await session.execute(stmt)).all()
    if not rows:
        return None
    first = rows[0]
    return StoredJob(
        id=first[0],
        order_id=first[1],
        user_id=first[2],
        status=first[3],
        due_at=first[4],
        items=tuple(StoredItem(*tuple(row[5:])) for row in rows),
    )


async def locked_job_status(session: AsyncSession, order_id: str) -> str | None:
    """The status of the order's job, its row locked until commit; None without a job."""
    stmt = select(Job.status).where(Job.order_id == order_id).with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def cancel_job(session: AsyncSession, *, order_id: str, reason: str, now: datetime) -> None:
    await session.execute(
        update(Job)
        .where(Job.order_id == order_id)
        .values(status="cancelled", cancel_reason=reason, updated_at=now)
    )


async def store_outcomes(
    session: AsyncSession, job: StoredJob, items: Sequence[StoredItem], *, now: datetime
) -> None:
    """Writes the job's status and due time, and the outcome of each of `items`, in one UPDATE
    per table (the item values picked per line by CASE)."""
    await session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(status=job.status, due_at=job.due_at, updated_at=now)
    )
    if not items:
        return
    await session.execute(
        update(JobItem)
        .where(JobItem.job_id == job.id, JobItem.line_no.in_([i.line_no for i in items]))
        .values(
            status=_per_line(JobItem.status, {i.line_no: i.status for i in items}),
            detail=_per_line(JobItem.detail, {i.line_no: i.detail for i in items}),
            external_ref=_per_line(
                JobItem.external_ref, {i.line_no: i.external_ref for i in items}
            ),
        )
    )


def _per_line(column: InstrumentedAttribute[Any], values: dict[int, Any]) -> Any:
    """`CASE line_no WHEN 1 THEN <value of line 1> ... END`, each value bound as the column's
    type (a NULL alone would otherwise have none)."""
    return case(
        {line_no: literal(value, column.type) for line_no, value in values.items()},
        value=JobItem.line_no,
    )


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
