"""Queries for Stripe Checkout Sessions, refunds, disputes and the Stripe event log (the ledger
is in ledger.py). Every status change is one conditional UPDATE: whoever's UPDATE matched made
it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.domain import (
    REFUND_HOLDS_MONEY,
    REFUND_MOVES,
    SESSION_MOVES,
    DisputeState,
    RefundStatus,
    SessionStatus,
    dispute_supersedes,
)
from services.payments.models import Dispute, PaymentSession, Refund, StripeEvent
from services.payments.stripe_gateway import CheckoutSession
from shared.db import is_postgres, one_of, rowcount, upsert_insert


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SessionChange:
    """What a session's move needs to announce its new status."""

    order_id: str
    session_id: str
    amount_total: int
    currency: str
    trace_id: str
    payment_intent_id: str | None


@dataclass(frozen=True)
class RefundChange:
    order_id: str
    refund_key: str
    amount: int
    trace_id: str


@dataclass(frozen=True)
class OpenSession:
    order_id: str
    session_id: str
    status: str


@dataclass(frozen=True)
class PendingRefund:
    """A refund the reconciler took to ask Stripe about."""

    order_id: str
    refund_key: str
    stripe_refund_id: str
    # Its reconciled_at before it was taken: put back when Stripe could not be asked.
    reconciled_at: datetime | None


# --- checkout sessions -----------------------------------------------------------------------


async def payment_session_of(db: AsyncSession, order_id: str) -> PaymentSession | None:
    return await db.get(PaymentSession, order_id)


async def locked_payment_session(db: AsyncSession, order_id: str) -> PaymentSession | None:
    """The order's session row, locked until commit on PostgreSQL (SQLite locks the database)."""
    stmt = select(PaymentSession).where(PaymentSession.order_id == order_id).with_for_update()
    return (await db.execute(stmt)).scalar_one_or_none()


async def add_payment_session(
    db: AsyncSession, *, order_id: str, checkout: CheckoutSession, trace_id: str
) -> PaymentSession:
    now = _now()
    row = PaymentSession(
        order_id=order_id,
        session_id=checkout.id,
        payment_intent_id=checkout.payment_intent_id,
        status="open",
        amount_total=checkout.amount_total,
        amount_refunded=0,
        currency=checkout.currency,
        url=checkout.url,
        expires_at=checkout.expires_at,
        trace_id=trace_id,
        created_at=now,
        updated_at=now,
    )
    db.add(row)
    await db.flush()
    return row


async def move_payment_session(
    db: AsyncSession,
    *,
    session_id: str,
    to: SessionStatus,
    payment_intent_id: str | None = None,
    charged: tuple[int, str] | None = None,
) -> SessionChange | None:
    """Moves the session forward to `to`; the change when this call made it, else None.

    `charged` (amount, currency) is what Stripe reports it took: it becomes the row's amount, so
    refunds are capped by the real charge even when it is not what the session asked for."""
    values: dict[str, Any] = {"status": to, "updated_at": _now()}
    if payment_intent_id is not None:
        values["payment_intent_id"] = payment_intent_id
    if charged is not None:
        values["amount_total"], values["currency"] = charged
    stmt = (
        update(PaymentSession)
        .where(
            PaymentSession.session_id == session_id,
            PaymentSession.status.in_(SESSION_MOVES[to]),
        )
        .values(**values)
        .returning(
            PaymentSession.order_id,
            PaymentSession.session_id,
            PaymentSession.amount_total,
            PaymentSession.currency,
            PaymentSession.trace_id,
            PaymentSession.payment_intent_id,
        )
    )
    row = (await db.execute(stmt)).first()
    return None if row is None else SessionChange(*row)


async def order_paid_by(db: AsyncSession, payment_intent_id: str) -> str | None:
    """The order whose session was paid through this payment intent; None: not ours (or its
    session's outcome, which names the intent, is not stored yet)."""
    stmt = select(PaymentSession.order_id).where(
        PaymentSession.payment_intent_id == payment_intent_id
    )
    return (await db.execute(stmt.limit(1))).scalar_one_or_none()


async def session_exists(db: AsyncSession, session_id: str) -> bool:
    stmt = select(PaymentSession.order_id).where(PaymentSession.session_id == session_id)
    return (await db.execute(stmt)).first() is not None


async def sessions_to_reconcile(
    db: AsyncSession, *, created_before: datetime, limit: int
) -> list[OpenSession]:
    """Sessions still waiting for an outcome, least recently reconciled first."""
    stmt = (
        select(PaymentSession.order_id, PaymentSession.session_id, PaymentSession.status)
        .where(
            PaymentSession.status.in_(("open", "processing")),
            PaymentSession.created_at <= created_before,
        )
        .order_by(func.coalesce(PaymentSession.reconciled_at, PaymentSession.created_at))
        .limit(limit)
    )
    return [OpenSession(*row) for row in (await db.execute(stmt)).all()]


async def mark_reconciled(db: AsyncSession, session_id: str) -> None:
    await db.execute(
        update(PaymentSession)
        .where(PaymentSession.session_id == session_id)
        .values(reconciled_at=_now())
    )


# --- refunds ---------------------------------------------------------------------------------


async def refund_of(db: AsyncSession, order_id: str, refund_key: str) -> Refund | None:
    return await db.get(Refund, (order_id, refund_key))


async def hold_refund_amount(db: AsyncSession, *, order_id: str, amount: int) -> bool:
    """Counts `amount` against what the order's payment can still give back; False (and no
    change) when it does not fit. The CHECK on amount_refunded backs this up."""
    stmt = (
        update(PaymentSession)
        .where(
            PaymentSession.order_id == order_id,
            PaymentSession.status == "complete",
            PaymentSession.amount_refunded + amount <= PaymentSession.amount_total,
        )
        .values(amount_refunded=PaymentSession.amount_refunded + amount, updated_at=_now())
    )
    return bool((await db.execute(stmt)).rowcount == 1)  # type: ignore[attr-defined]


async def amount_left_to_refund(db: AsyncSession, order_id: str) -> int:
    """What the order's payment can still give back, as committed (not a loaded row's view)."""
    stmt = select(PaymentSession.amount_total - PaymentSession.amount_refunded).where(
        PaymentSession.order_id == order_id
    )
    return int((await db.execute(stmt)).scalar_one())


async def release_refund_amount(db: AsyncSession, *, order_id: str, amount: int) -> None:
    """Gives back what hold_refund_amount counted for a refund that pays nothing out."""
    await db.execute(
        update(PaymentSession)
        .where(PaymentSession.order_id == order_id)
        .values(amount_refunded=PaymentSession.amount_refunded - amount, updated_at=_now())
    )


async def add_refund(
    db: AsyncSession,
    *,
    order_id: str,
    refund_key: str,
    stripe_refund_id: str | None,
    amount: int,
    reason: str,
    trace_id: str,
    status: RefundStatus = "pending",
    failure_reason: str | None = None,
) -> Refund:
    now = _now()
    row = Refund(
        order_id=order_id,
        refund_key=refund_key,
        stripe_refund_id=stripe_refund_id,
        amount=amount,
        status=status,
        reason=reason,
        failure_reason=failure_reason,
        trace_id=trace_id,
        created_at=now,
        updated_at=now,
    )
    db.add(row)
    await db.flush()
    return row


async def move_refund(
    db: AsyncSession,
    *,
    stripe_refund_id: str,
    to: RefundStatus,
    failure_reason: str | None = None,
) -> RefundChange | None:
    """Moves a refund forward; the change when this call made it, else None. A failed or
    canceled one frees its amount for another refund (the operator's retry)."""
    stmt = (
        update(Refund)
        .where(Refund.stripe_refund_id == stripe_refund_id, Refund.status.in_(REFUND_MOVES[to]))
        .values(status=to, failure_reason=failure_reason, updated_at=_now())
        .returning(Refund.order_id, Refund.refund_key, Refund.amount, Refund.trace_id)
    )
    row = (await db.execute(stmt)).first()
    if row is None:
        return None
    change = RefundChange(*row)
    if to not in REFUND_HOLDS_MONEY:
        await release_refund_amount(db, order_id=change.order_id, amount=change.amount)
    return change


async def refund_exists(db: AsyncSession, stripe_refund_id: str) -> bool:
    stmt = select(Refund.order_id).where(Refund.stripe_refund_id == stripe_refund_id)
    return (await db.execute(stmt)).first() is not None


async def take_refunds_to_reconcile(
    db: AsyncSession, *, asked_before: datetime, limit: int
) -> list[PendingRefund]:
    """Pending refunds made, and last asked about, before `asked_before`; least recently asked
    first, marked asked now. Rows another replica is taking are skipped (SKIP LOCKED on
    PostgreSQL; SQLite has one writer), and the mark keeps them from its next round: each
    pending refund is asked about by one replica at a time."""
    last_asked = func.coalesce(Refund.reconciled_at, Refund.created_at)
    stmt = (
        select(Refund.order_id, Refund.refund_key, Refund.stripe_refund_id, Refund.reconciled_at)
        .where(
            Refund.status == "pending",
            Refund.stripe_refund_id.is_not(None),
            last_asked <= asked_before,
        )
        .order_by(last_asked)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    taken = [
        PendingRefund(order_id, refund_key, str(refund_id), asked)
        for order_id, refund_key, refund_id, asked in (await db.execute(stmt)).all()
    ]
    if taken:
        ids = [refund.stripe_refund_id for refund in taken]
        await db.execute(
            update(Refund)
            .where(one_of(Refund.stripe_refund_id, ids, postgres=is_postgres(db)))
            .values(reconciled_at=_now())
        )
    return taken


async def put_back_refund(db: AsyncSession, refund: PendingRefund) -> None:
    """Undoes take_refunds_to_reconcile's mark: Stripe was not asked, the next round asks."""
    await db.execute(
        update(Refund)
        .where(Refund.stripe_refund_id == refund.stripe_refund_id)
        .values(reconciled_at=refund.reconciled_at)
    )


# --- the Stripe event log --------------------------------------------------------------------


async def record_event(
    db: AsyncSession, *, event_id: str, type_: str, object_id: str | None, payload: str
) -> bool:
    """True when the event is new. ON CONFLICT, not read-then-insert: a concurrent duplicate
    delivery waits on the first one's row and then finds it, so only one applies the effect."""
    stmt = (
        upsert_insert(db)(StripeEvent)
        .values(
            event_id=event_id,
            type=type_,
            object_id=object_id,
            payload=payload,
            received_at=_now(),
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
    )
    result = await db.execute(stmt)
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def mark_event_processed(db: AsyncSession, event_id: str) -> None:
    # An event ignored before and applied now (the operator replayed it) is ignored no more.
    await db.execute(
        update(StripeEvent)
        .where(StripeEvent.event_id == event_id)
        .values(processed_at=_now(), ignored_at=None, ignored_reason=None)
    )


async def mark_events_ignored(db: AsyncSession, reasons: Mapping[str, str]) -> None:
    """Marks events about no payment of ours (event id -> why) processed and ignored: nothing
    is left to do for them, so the replay never takes them up again."""
    by_reason: dict[str, list[str]] = {}
    for event_id, reason in reasons.items():
        by_reason.setdefault(reason, []).append(event_id)
    now = _now()
    for reason, ids in by_reason.items():
        await db.execute(
            update(StripeEvent)
            .where(one_of(StripeEvent.event_id, ids, postgres=is_postgres(db)))
            .values(processed_at=now, ignored_at=now, ignored_reason=reason)
        )


async def locked_event(db: AsyncSession, event_id: str) -> StripeEvent | None:
    """The event row, locked so replicas replaying at once apply it one after the other."""
    stmt = select(StripeEvent).where(StripeEvent.event_id == event_id).with_for_update()
    return (await db.execute(stmt)).scalar_one_or_none()


async def unprocessed_events(
    db: AsyncSession,
    *,
    object_id: str | None = None,
    received_after: datetime | None = None,
    limit: int = 100,
) -> list[StripeEvent]:
    stmt = select(StripeEvent).where(StripeEvent.processed_at.is_(None))
    if object_id is not None:
        stmt = stmt.where(StripeEvent.object_id == object_id)
    if received_after is not None:
        stmt = stmt.where(StripeEvent.received_at >= received_after)
    stmt = stmt.order_by(StripeEvent.received_at, StripeEvent.event_id).limit(limit)
    return list((await db.execute(stmt)).scalars())


# --- disputes --------------------------------------------------------------------------------


async def record_dispute(
    db: AsyncSession,
    *,
    dispute_id: str,
    order_id: str,
    payment_intent_id: str,
    charge_id: str | None,
    opened_at: datetime,
    state: DisputeState,
) -> DisputeState | None:
    """Stores `state` (from a Stripe event) as the dispute's (opened at `opened_at`), when it is
    newer than what the row holds (domain.dispute_supersedes); the row's state before, None
    when this call created it.

    ON CONFLICT, then the row locked: two replicas told of one dispute at once queue on it, and
    the second compares with what the first wrote."""
    now = _now()
    inserted = await db.execute(
        upsert_insert(db)(Dispute)
        .values(
            dispute_id=dispute_id,
            order_id=order_id,
            payment_intent_id=payment_intent_id,
            charge_id=charge_id,
            **_dispute_values(state),
            created_at=opened_at,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["dispute_id"])
    )
    if rowcount(inserted) == 1:
        return None
    # Columns, not the ORM object: the UPDATE below must not be checked against a stale copy.
    stmt = (
        select(Dispute.status, Dispute.amount, Dispute.currency, Dispute.reason, Dispute.status_at)
        .where(Dispute.dispute_id == dispute_id)
        .with_for_update()
    )
    stored = DisputeState(*(await db.execute(stmt)).one())
    if dispute_supersedes(stored, state):
        await db.execute(
            update(Dispute)
            .where(
                Dispute.dispute_id == dispute_id,
                Dispute.status == stored.status,
                Dispute.status_at == stored.at,
            )
            .values(**_dispute_values(state), updated_at=now)
        )
    return stored


def _dispute_values(state: DisputeState) -> dict[str, Any]:
    return {
        "status": state.status,
        "amount": state.amount,
        "currency": state.currency,
        "reason": state.reason,
        "status_at": state.at,
    }


async def disputes(
    db: AsyncSession, *, status: str | None = None, order_id: str | None = None, limit: int = 100
) -> list[Dispute]:
    """Disputes, newest opened first; only those in `status` / of `order_id` when given."""
    stmt = select(Dispute)
    if status is not None:
        stmt = stmt.where(Dispute.status == status)
    if order_id is not None:
        stmt = stmt.where(Dispute.order_id == order_id)
    stmt = stmt.order_by(Dispute.created_at.desc(), Dispute.dispute_id.desc()).limit(limit)
    return list((await db.execute(stmt)).scalars())
