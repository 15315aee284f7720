"""Queries of the orders service."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from services.orders.models import Order, SagaInstance

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
