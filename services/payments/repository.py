"""Queries for Stripe Checkout Sessions and the Stripe event log (the ledger is in ledger.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.models import PaymentSession, StripeEvent
from services.payments.stripe_gateway import CheckoutSession
from shared.db import upsert_insert


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SessionChange:
    """What the webhook needs to announce a session's new status."""

    order_id: str
    session_id: str
    amount_total: int
    currency: str
    trace_id: str


async def payment_session_of(session: AsyncSession, order_id: str) -> PaymentSession | None:
    return await session.get(PaymentSession, order_id)


async def add_payment_session(
    session: AsyncSession, *, order_id: str, checkout: CheckoutSession, trace_id: str
) -> PaymentSession:
    now = _now()
    row = PaymentSession(
        order_id=order_id,
        session_id=checkout.id,
        payment_intent_id=checkout.payment_intent_id,
        status="open",
        amount_total=checkout.amount_total,
        currency=checkout.currency,
        url=checkout.url,
        expires_at=checkout.expires_at,
        trace_id=trace_id,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return row


async def close_payment_session(
    session: AsyncSession,
    *,
    session_id: str,
    status: str,
    payment_intent_id: str | None = None,
) -> SessionChange | None:
    """open -> `status`; the change when this call made it, None when it was not open."""
    values: dict[str, Any] = {"status": status, "updated_at": _now()}
    if payment_intent_id is not None:
        values["payment_intent_id"] = payment_intent_id
    stmt = (
        update(PaymentSession)
        .where(PaymentSession.session_id == session_id, PaymentSession.status == "open")
        .values(**values)
        .returning(
            PaymentSession.order_id,
            PaymentSession.session_id,
            PaymentSession.amount_total,
            PaymentSession.currency,
            PaymentSession.trace_id,
        )
    )
    row = (await session.execute(stmt)).first()
    return None if row is None else SessionChange(*row)


async def session_exists(session: AsyncSession, session_id: str) -> bool:
    stmt = select(PaymentSession.order_id).where(PaymentSession.session_id == session_id)
    return (await session.execute(stmt)).first() is not None


async def record_event(session: AsyncSession, *, event_id: str, type_: str, payload: str) -> bool:
    """True when the event is new. ON CONFLICT, not read-then-insert: a concurrent duplicate
    delivery waits on the first one's row and then finds it, so only one applies the effect."""
    stmt = (
        upsert_insert(session)(StripeEvent)
        .values(event_id=event_id, type=type_, payload=payload, received_at=_now())
        .on_conflict_do_nothing(index_elements=["event_id"])
    )
    result = await session.execute(stmt)
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def mark_event_processed(session: AsyncSession, event_id: str) -> None:
    await session.execute(
        update(StripeEvent).where(StripeEvent.event_id == event_id).values(processed_at=_now())
    )


async def unprocessed_events(session: AsyncSession, *, limit: int = 100) -> list[StripeEvent]:
    stmt = (
        select(StripeEvent)
        .where(StripeEvent.processed_at.is_(None))
        .order_by(StripeEvent.received_at)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())
