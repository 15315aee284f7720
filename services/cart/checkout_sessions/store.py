"""Checkout sessions in the database (the `checkout_sessions` table). Invariants live in the
statements (conditional updates, the partial unique index), not in read-then-write Python."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, case, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.cart.models import CheckoutSession
from shared.db import rowcount

# The statements on the checkout path are prebuilt with bound parameters, as in
# `services.cart.repository` (which says why).
_sessions = cast(Table, CheckoutSession.__table__)


async def add_session(db: AsyncSession, row: CheckoutSession) -> None:
    """Stores a new session as it is; `row` stays out of the ORM session (nothing writes it
    back). Raises IntegrityError when it is active and the cart has an active session already
    (partial unique index)."""
    await db.execute(
        _ADD_SESSION, {column.key: getattr(row, column.key) for column in _sessions.columns}
    )


_ADD_SESSION = insert(_sessions)


async def get_session(db: AsyncSession, *, session_id: str, user_id: str) -> CheckoutSession | None:
    query = select(CheckoutSession).where(
        CheckoutSession.id == session_id, CheckoutSession.user_id == user_id
    )
    return (await db.scalars(query)).one_or_none()


async def active_session(db: AsyncSession, cart_id: str) -> CheckoutSession | None:
    """The cart's session in status `active` (which may be past its expiry, not yet marked)."""
    return (await db.scalars(_ACTIVE_SESSION, {"cart_id": cart_id})).one_or_none()


_ACTIVE_SESSION = select(CheckoutSession).where(
    CheckoutSession.cart_id == bindparam("cart_id"), CheckoutSession.status == "active"
)


async def retire_active_session(
    db: AsyncSession, *, cart_id: str, replaced_by: str | None, now: datetime
) -> None:
    """Ends the cart's active session: `expired` if its time is up, else `invalidated` (pointing
    at its successor). One statement, conditional on the row still being active: a concurrent
    cleanup that expired it first leaves nothing to retire."""
    time_is_up = CheckoutSession.expires_at <= now
    await db.execute(
        update(CheckoutSession)
        .where(CheckoutSession.cart_id == cart_id, CheckoutSession.status == "active")
        .values(
            status=case((time_is_up, "expired"), else_="invalidated"),
            replaced_by=case((time_is_up, CheckoutSession.replaced_by), else_=replaced_by),
            updated_at=now,
        )
    )


async def complete_session(
    db: AsyncSession, *, session_id: str, checkout_id: str, now: datetime
) -> bool:
    """active -> completed, once: only an unexpired active session, only one checkout."""
    params = {"session_id": session_id, "checkout_id": checkout_id, "now": now}
    return rowcount(await db.execute(_COMPLETE_SESSION, params)) == 1


_COMPLETE_SESSION = (
    update(_sessions)
    .where(
        _sessions.c.id == bindparam("session_id"),
        _sessions.c.status == "active",
        _sessions.c.expires_at > bindparam("now"),
    )
    .values(status="completed", checkout_id=bindparam("checkout_id"), updated_at=bindparam("now"))
)


async def mark_recovered(
    db: AsyncSession, *, session_id: str, replaced_by: str, now: datetime
) -> None:
    """An expired session points at the session that recovered it."""
    await db.execute(
        update(CheckoutSession)
        .where(
            CheckoutSession.id == session_id,
            CheckoutSession.status.in_(("active", "expired")),
            CheckoutSession.expires_at <= now,
        )
        .values(status="expired", replaced_by=replaced_by, updated_at=now)
    )


async def expire_sessions(db: AsyncSession, now: datetime) -> int:
    result = await db.execute(
        update(CheckoutSession)
        .where(CheckoutSession.status == "active", CheckoutSession.expires_at <= now)
        .values(status="expired", updated_at=now)
    )
    return rowcount(result)


async def delete_ended_sessions(db: AsyncSession, *, ended_before: datetime) -> int:
    """Deletes expired and invalidated sessions that ended before the given time; completed
    sessions stay, as the record of what each checkout was priced from."""
    result = await db.execute(
        delete(CheckoutSession).where(
            CheckoutSession.status.in_(("expired", "invalidated")),
            CheckoutSession.updated_at < ended_before,
        )
    )
    return rowcount(result)
