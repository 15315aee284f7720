"""Queries of the provisioning service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from services.provisioning.domain import JobLine
from services.provisioning.models import CreditGrant, Entitlement, Job, JobItem, JobUnit
from shared.db import insert_or_nothing, is_postgres


@dataclass(frozen=True)
class StoredItem(JobLine):
    """A job item as stored: its line and, once provisioned, the outcome."""

    status: str
    detail: str
    external_ref: str | None
    units_failed: int


@dataclass(frozen=True)
class StoredUnit:
    """One unit of a line made one by one (a server), with its outcome."""

    line_no: int
    unit_no: int
    status: str
    detail: str
    external_ref: str | None


@dataclass(frozen=True)
class StoredGrant:
    """An unconfirmed credit grant, as the re-sender sends it again."""

    grant_id: str
    order_id: str
    user_id: str
    credits: int
    reason: str
    sends: int


@dataclass(frozen=True)
class StoredJob:
    id: uuid.UUID
    order_id: str
    user_id: str
    status: str
    due_at: datetime | None
    items: tuple[StoredItem, ...]


# The saga's commands run these statements prebuilt, with bound parameters: building a statement
# and its cache key costs about as much CPU as running it. They go through the Core tables, with
# no identity map to keep in step: only job_by_order loads Job objects, for reading, and the
# handlers never call it. The ON CONFLICT ones are spelled per dialect, keyed by `is_postgres`.
_jobs = cast(Table, Job.__table__)
_items = cast(Table, JobItem.__table__)
_entitlements = cast(Table, Entitlement.__table__)
_units = cast(Table, JobUnit.__table__)
_grants = cast(Table, CreditGrant.__table__)

_ADD_JOB = insert_or_nothing(_jobs, "order_id")
_JOB_ID = select(_jobs.c.id).where(_jobs.c.order_id == bindparam("b_order_id"))
_ADD_ITEMS = insert(_items)
_LOCKED_JOB = (
    select(
        _jobs.c.id,
        _jobs.c.order_id,
        _jobs.c.user_id,
        _jobs.c.status,
        _jobs.c.due_at,
        _items.c.line_no,
        _items.c.item_id,
        _items.c.kind,
        _items.c.name,
        _items.c.quantity,
        _items.c.units_per_item,
        _items.c.status,
        _items.c.detail,
        _items.c.external_ref,
        _items.c.units_failed,
    )
    .join(_items, _items.c.job_id == _jobs.c.id)
    .where(_jobs.c.order_id == bindparam("b_order_id"))
    .order_by(_items.c.line_no)
    .with_for_update()
)
_CANCEL_JOB = (
    update(_jobs)
    .where(_jobs.c.order_id == bindparam("b_order_id"))
    .values(status="cancelled", cancel_reason=bindparam("b_reason"), updated_at=bindparam("b_now"))
)
_STORE_JOB = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("b_job_id"))
    .values(
        status=bindparam("b_status"), due_at=bindparam("b_due_at"), updated_at=bindparam("b_now")
    )
)
# One fixed-shape UPDATE run once per item (executemany): one statement text whatever the number
# of lines, where a CASE per line would be a new statement for each set of line numbers.
_STORE_ITEM = (
    update(_items)
    .where(_items.c.job_id == bindparam("b_job_id"), _items.c.line_no == bindparam("b_line_no"))
    .values(
        status=bindparam("b_status"),
        detail=bindparam("b_detail"),
        external_ref=bindparam("b_external_ref"),
        units_failed=bindparam("b_units_failed"),
    )
)
_ADD_UNITS = insert(_units)
_ADD_ENTITLEMENT = insert_or_nothing(_entitlements, "order_id", "line_no")
# A plain INSERT: a line is provisioned once (under its job's lock), so a second grant row for
# it would be a bug to fail loudly on, not a repeat to absorb.
_ADD_GRANT = insert(_grants)
_CONFIRM_GRANT = (
    update(_grants)
    .where(_grants.c.grant_id == bindparam("b_grant_id"), _grants.c.confirmed_at.is_(None))
    .values(confirmed_at=bindparam("b_now"))
)
_DUE_GRANTS = (
    select(
        _grants.c.grant_id,
        _grants.c.order_id,
        _grants.c.user_id,
        _grants.c.credits,
        _grants.c.reason,
        _grants.c.sends,
    )
    .where(_grants.c.confirmed_at.is_(None), _grants.c.next_send_at <= bindparam("b_now"))
    .order_by(_grants.c.next_send_at)
    .limit(bindparam("b_limit"))
)
# Keyed by `is_postgres`: replicas each take rows no other holds (SQLite has one writer anyway).
_LOCKED_DUE_GRANTS = {True: _DUE_GRANTS.with_for_update(skip_locked=True), False: _DUE_GRANTS}
_GRANT_SENT = (
    update(_grants)
    .where(_grants.c.grant_id == bindparam("b_grant_id"))
    .values(
        sends=bindparam("b_sends"),
        last_sent_at=bindparam("b_now"),
        next_send_at=bindparam("b_next_send_at"),
    )
)


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
    job = {
        "id": job_id,
        "order_id": order_id,
        "user_id": user_id,
        "status": "created",
        "created_at": now,
        "updated_at": now,
    }
    result = await session.execute(_ADD_JOB[is_postgres(session)], job)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return (await session.execute(_JOB_ID, {"b_order_id": order_id})).scalar_one()
    # One INSERT run with a row per line (executemany): the rows are only written, never used
    # as objects here.
    await session.execute(
        _ADD_ITEMS,
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
        ],
    )
    return job_id


async def job_by_order(session: AsyncSession, order_id: str) -> Job | None:
    """The order's job with its items (one joined query) and their units, for reading."""
    stmt = (
        select(Job)
        .where(Job.order_id == order_id)
        .options(joinedload(Job.items).selectinload(JobItem.units))
    )
    return (await session.execute(stmt)).unique().scalar_one_or_none()


async def locked_job(session: AsyncSession, order_id: str) -> StoredJob | None:
    """The order's job with its items in one query, locked until commit: handlers of the same
    order queue here. The item rows are locked too, not only the job's: a row that changed
    while this query waited is then returned as committed, never as the snapshot saw it.
    (An inner join: a job always has items, new_job refuses an empty one.)"""
    rows = (await session.execute(_LOCKED_JOB, {"b_order_id": order_id})).all()
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


async def cancel_job(session: AsyncSession, *, order_id: str, reason: str, now: datetime) -> None:
    await session.execute(_CANCEL_JOB, {"b_order_id": order_id, "b_reason": reason, "b_now": now})


async def store_outcomes(
    session: AsyncSession,
    job: StoredJob,
    items: Sequence[StoredItem],
    units: Sequence[StoredUnit] = (),
    *,
    now: datetime,
) -> None:
    """Writes the job's status and due time, the outcome of each of `items` and of `units`."""
    await session.execute(
        _STORE_JOB,
        {"b_job_id": job.id, "b_status": job.status, "b_due_at": job.due_at, "b_now": now},
    )
    if not items:
        return
    await session.execute(
        _STORE_ITEM,
        [
            {
                "b_job_id": job.id,
                "b_line_no": i.line_no,
                "b_status": i.status,
                "b_detail": i.detail,
                "b_external_ref": i.external_ref,
                "b_units_failed": i.units_failed,
            }
            for i in items
        ],
    )
    if units:
        await session.execute(
            _ADD_UNITS,
            [
                {
                    "job_id": job.id,
                    "line_no": u.line_no,
                    "unit_no": u.unit_no,
                    "status": u.status,
                    "detail": u.detail,
                    "external_ref": u.external_ref,
                }
                for u in units
            ],
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
    await session.execute(
        _ADD_ENTITLEMENT[is_postgres(session)],
        {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "order_id": order_id,
            "line_no": line_no,
            "item_id": item_id,
            "sessions": sessions,
            "created_at": now,
        },
    )


async def entitlements_of(session: AsyncSession, user_id: str) -> Sequence[Entitlement]:
    stmt = (
        select(Entitlement)
        .where(Entitlement.user_id == user_id)
        .order_by(Entitlement.created_at, Entitlement.order_id, Entitlement.line_no)
    )
    return (await session.execute(stmt)).scalars().all()


async def add_credit_grant(
    session: AsyncSession,
    *,
    grant_id: str,
    order_id: str,
    user_id: str,
    credits: int,
    reason: str,
    now: datetime,
    next_send_at: datetime,
) -> None:
    """Records a grant just sent for the first time, unconfirmed."""
    await session.execute(
        _ADD_GRANT,
        {
            "grant_id": grant_id,
            "order_id": order_id,
            "user_id": user_id,
            "credits": credits,
            "reason": reason,
            "created_at": now,
            "last_sent_at": now,
            "sends": 1,
            "next_send_at": next_send_at,
        },
    )


async def confirm_grant(session: AsyncSession, *, grant_id: str, now: datetime) -> None:
    """Marks the grant confirmed; a grant unknown here or confirmed already is left as it is."""
    await session.execute(_CONFIRM_GRANT, {"b_grant_id": grant_id, "b_now": now})


async def locked_due_grants(
    session: AsyncSession, *, now: datetime, limit: int
) -> list[StoredGrant]:
    """Up to `limit` unconfirmed grants due to be sent again at `now`, the longest overdue first,
    locked until commit; on PostgreSQL rows another transaction holds are skipped, not awaited."""
    result = await session.execute(
        _LOCKED_DUE_GRANTS[is_postgres(session)], {"b_now": now, "b_limit": limit}
    )
    return [StoredGrant(*row) for row in result.all()]


async def grants_sent(
    session: AsyncSession, sent: Sequence[tuple[str, int, datetime]], *, now: datetime
) -> None:
    """Records grants sent again at `now`: (grant_id, sends so far, when it is due next)."""
    if not sent:
        return
    await session.execute(
        _GRANT_SENT,
        [
            {"b_grant_id": grant_id, "b_sends": sends, "b_next_send_at": due, "b_now": now}
            for grant_id, sends, due in sent
        ],
    )
