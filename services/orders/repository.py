"""Queries of the orders service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from services.orders.models import Order, SagaInstance
from shared.db import UtcDateTime

_SAGA_FOR_UPDATE = (
    select(SagaInstance)
    .where(SagaInstance.id == bindparam("saga_id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)


async def saga_for_update(db: AsyncSession, saga_id: str) -> SagaInstance | None:
    """The saga row, locked until the transaction ends (FOR UPDATE on PostgreSQL; SQLite's
    BEGIN IMMEDIATE already serialises writers).

    Two replies for one saga handled at once (on two replicas) then run one after the other,
    the second deciding on the first's result. The version column alone would make the second
    fail with StaleDataError and be redelivered, spending one of its bounded deliveries.
    """
    return (await db.execute(_SAGA_FOR_UPDATE, {"saga_id": saga_id})).scalar_one_or_none()


_SAGA_FOR_INQUIRY = (
    select(
        SagaInstance.state,
        Order.status_reason,
        type_coerce(Order.updated_at, UtcDateTime).label("status_changed_at"),
    )
    .join(Order, Order.id == SagaInstance.id)
    .where(SagaInstance.id == bindparam("order_id"))
)


async def saga_for_inquiry(
    db: AsyncSession, order_id: str
) -> Row[dict[str, Any], str | None, datetime] | None:
    """(state, status_reason, status_changed_at) of the order's saga and order, read together,
    unlocked: enough to say an outcome again. Columns, not the `SagaInstance`: a saga moved
    earlier in this transaction (a grouped reply) is loaded in the session with its state from
    before the move, and an entity query would hand back that stale object."""
    return (await db.execute(_SAGA_FOR_INQUIRY, {"order_id": order_id})).one_or_none()


async def order_with_details(db: AsyncSession, order_id: str) -> Order | None:
    query = (
        select(Order)
        .where(Order.id == order_id)
        .options(selectinload(Order.lines), selectinload(Order.history))
    )
    return (await db.execute(query)).scalar_one_or_none()


async def orders_of(db: AsyncSession, user_id: str, *, limit: int = 50) -> Sequence[Order]:
    query = (
        select(Order)
        .where(Order.user_id == user_id)
        .order_by(Order.created_at.desc())
        .limit(limit)
        .options(selectinload(Order.lines), selectinload(Order.history))
    )
    return (await db.execute(query)).scalars().all()
