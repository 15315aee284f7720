"""What a Stripe event changes: the one place where the webhook, the replay of stored events
and the reconcilers move a Checkout Session, a refund or a dispute, and announce the move.

A move is a conditional UPDATE that only matches from an earlier status (domain.SESSION_MOVES,
domain.REFUND_MOVES), so however many paths learn about one payment or refund at once, exactly
one of them emits for it. An event about no payment of ours (a Payment Link, another
integration on the account, `stripe trigger`) is marked ignored, once, and never replayed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import repository
from services.payments.domain import (
    EXTERNAL_REFUND_REASON,
    REFUND_HOLDS_MONEY,
    SESSION_MOVES,
    DisputeState,
    RefundFailure,
    RefundStatus,
    SessionStatus,
    could_be_our_session,
    dispute_changes,
    external_refund_key,
    is_external_refund,
    refund_failure,
    refund_failure_reason,
    refund_status,
    session_target,
)
from services.payments.models import PaymentSession, Refund, StripeEvent
from services.payments.repository import RefundChange, SessionChange
from services.payments.stripe_gateway import CheckoutSession
from shared.db import is_postgres, one_of
from shared.logging import log_fields
from shared.messages import Contract
from shared.messages.contracts import (
    PaymentDisputed,
    PaymentExpired,
    PaymentFailed,
    PaymentPending,
    PaymentRefunded,
    PaymentSucceeded,
    RefundFailed,
)
from shared.outbox import Outbox

log = logging.getLogger("services.payments.stripe_events")

# Events whose object is a refund; charge.refund.updated is the older name Stripe still sends
# (for failed refunds, among others) beside refund.updated / refund.failed.
REFUND_EVENTS = frozenset(
    {"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"}
)
# Their object is the dispute; funds_* follow money moved by it, with the dispute's status.
DISPUTE_EVENTS = frozenset(
    {
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.closed",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
    }
)
ASYNC_FAILURE_REASON = "delayed payment failed (checkout.session.async_payment_failed)"
# The row keeps no failure reason; only a delayed payment that failed ever reaches "failed".
STORED_FAILURE_REASON = "delayed payment failed (announced again from the stored session)"


@dataclass(frozen=True)
class EventOutcome:
    """What applying one stored event came to."""

    # False: it is about a row of ours not visible yet (its transaction has not committed):
    # kept for the replay, or for the handler that writes the row.
    applied: bool
    # Why it is about no payment of ours (then applied too: there is nothing left to do).
    ignored: str | None = None


APPLIED = EventOutcome(applied=True)
WAITING = EventOutcome(applied=False)
# The reasons stored with an ignored event (stripe_events.ignored_reason).
FOREIGN_SESSION = "checkout session of no order of ours"
FOREIGN_PAYMENT = "payment of no order of ours"


def _ignored(kind: str, object_id: object, reason: str) -> EventOutcome:
    # Logged once: an ignored event is never applied again (unless an operator names it).
    log.info("stripe event %s ignored: %s", kind, reason, extra=log_fields(object_id=object_id))
    return EventOutcome(applied=True, ignored=reason)


def object_of(event: dict[str, Any]) -> dict[str, Any]:
    obj = event.get("data", {}).get("object", {})
    return obj if isinstance(obj, dict) else {}


def object_id_of(event: dict[str, Any]) -> str | None:
    found = object_of(event).get("id")
    return found if isinstance(found, str) else None


def _intent_id(obj: dict[str, Any]) -> str | None:
    intent = obj.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    return intent if isinstance(intent, str) else None


async def apply_events(db: AsyncSession, outbox: Outbox, events: list[dict[str, Any]]) -> list[str]:
    """Applies several stored events in the caller's transaction, in order; the ids of those
    applied. Those about no payment of ours are marked ignored (and processed) here, and are
    not among the ids. One query first finds the sessions the events cannot move any more (a
    status only moves forward, so one that is not a source of the event's move never will be):
    those events are applied by storing them alone, without a statement each (redeliveries,
    late events)."""
    settled = await _settled_sessions(db, events)
    applied: list[str] = []
    ignored: dict[str, str] = {}
    for event in events:
        if _moves_nothing(event, settled):
            applied.append(str(event["id"]))
            continue
        outcome = await apply_event(db, outbox, event)
        if outcome.ignored is not None:
            ignored[str(event["id"])] = outcome.ignored
        elif outcome.applied:
            applied.append(str(event["id"]))
    if ignored:
        await repository.mark_events_ignored(db, ignored)
    return applied


async def apply_stored(db: AsyncSession, outbox: Outbox, stored: StripeEvent) -> EventOutcome:
    """Applies an event stored before (the replay, a handler that wrote its row) and marks it
    processed, or ignored; a waiting one stays as it is."""
    outcome = await apply_event(db, outbox, json.loads(stored.payload))
    if outcome.ignored is not None:
        await repository.mark_events_ignored(db, {stored.event_id: outcome.ignored})
    elif outcome.applied:
        await repository.mark_event_processed(db, stored.event_id)
    return outcome


async def _settled_sessions(db: AsyncSession, events: list[dict[str, Any]]) -> dict[str, str]:
    ids = {
        obj_id
        for e in events
        if str(e.get("type")).startswith("checkout.session.")
        and isinstance(obj_id := object_of(e).get("id"), str)
    }
    if not ids:
        return {}
    stmt = select(PaymentSession.session_id, PaymentSession.status).where(
        one_of(PaymentSession.session_id, sorted(ids), postgres=is_postgres(db))
    )
    return {sid: status for sid, status in (await db.execute(stmt)).all()}


def _moves_nothing(event: dict[str, Any], statuses: dict[str, str]) -> bool:
    kind = str(event.get("type"))
    obj = object_of(event)
    status = statuses.get(obj.get("id"))  # type: ignore[arg-type]
    if not kind.startswith("checkout.session.") or status is None:
        return False
    target = session_target(kind, obj.get("payment_status"))
    if target is None or status in SESSION_MOVES[target]:
        return False
    log.info(
        "stripe event %s does not move the session forward; stored only",
        kind,
        extra=log_fields(session_id=obj["id"]),
    )
    return True


async def apply_event(db: AsyncSession, outbox: Outbox, event: dict[str, Any]) -> EventOutcome:
    """Applies one stored event; WAITING when it cannot be applied yet (its session or refund
    row is not visible), ignored when it is about no payment of ours. An event that would move
    something backwards, or that we do not act on, counts as applied: storing it is all there
    is to do."""
    kind = str(event.get("type"))
    obj = object_of(event)
    if kind.startswith("checkout.session."):
        target = session_target(kind, obj.get("payment_status"))
        if target is None or not isinstance(obj.get("id"), str):
            return APPLIED
        reason = ASYNC_FAILURE_REASON if target == "failed" else ""
        change = await settle_session(
            db,
            outbox,
            session_id=obj["id"],
            target=target,
            payment_intent_id=_intent_id(obj),
            amount=obj.get("amount_total"),
            currency=obj.get("currency"),
            failure_reason=reason,
        )
        return APPLIED if change is not None else await _unmoved_session(db, obj, kind)
    if kind in REFUND_EVENTS:
        return await _track_refund(db, outbox, obj, kind)
    if kind == "charge.refunded":
        return await _track_charge_refunds(db, outbox, obj, kind)
    if kind in DISPUTE_EVENTS:
        return await _track_dispute(db, outbox, event, obj, kind)
    return APPLIED


async def settle_session(
    db: AsyncSession,
    outbox: Outbox,
    *,
    session_id: str,
    target: SessionStatus,
    payment_intent_id: str | None = None,
    amount: Any = None,
    currency: Any = None,
    failure_reason: str = "",
) -> SessionChange | None:
    """Moves the session to `target` and writes what that announces to the outbox, in the
    caller's transaction; None when the session was not in a status that may move there.

    A completed session announces what Stripe says was charged (`amount`, `currency`), never the
    sum we asked for: the saga compares the two and refunds a mismatch."""
    charged = _charged(amount, currency) if target == "complete" else None
    change = await repository.move_payment_session(
        db, session_id=session_id, to=target, payment_intent_id=payment_intent_id, charged=charged
    )
    if change is None:
        return None
    message = _announcement(change, target, failure_reason)
    if message is not None:
        await outbox.emit(db, message, correlation_id=change.trace_id)
    log.info(
        "checkout session moved to %s",
        target,
        extra=log_fields(order_id=change.order_id, session_id=session_id),
    )
    return change


async def settle_from_stripe(
    db: AsyncSession,
    outbox: Outbox,
    remote: CheckoutSession,
    target: SessionStatus,
    *,
    found_by: str,
) -> SessionChange | None:
    """settle_session with what Stripe's current view of the session (`remote`, retrieved by
    the reconciler or an inquiry) says it charged; `target` is domain.reconciled_target's."""
    return await settle_session(
        db,
        outbox,
        session_id=remote.id,
        target=target,
        payment_intent_id=remote.payment_intent_id,
        amount=remote.amount_total,
        currency=remote.currency,
        failure_reason=f"delayed payment failed (found by {found_by})",
    )


def stored_announcement(row: PaymentSession) -> Contract | None:
    """What the row's status announced when the session reached it, announced again from the
    row (the answer to an inquiry); None while the session has no outcome."""
    change = SessionChange(
        order_id=row.order_id,
        session_id=row.session_id,
        amount_total=row.amount_total,
        currency=row.currency,
        trace_id=row.trace_id,
        payment_intent_id=row.payment_intent_id,
    )
    return _announcement(change, row.status, STORED_FAILURE_REASON)


def _charged(amount: Any, currency: Any) -> tuple[int, str] | None:
    """Stripe's amount_total and currency of a paid session; None if it left them out (a
    completed Checkout Session always has both; then the row's, as created, stand)."""
    if isinstance(amount, bool) or not isinstance(amount, int) or not isinstance(currency, str):
        return None
    return amount, currency.lower()


def _announcement(change: SessionChange, target: str, reason: str) -> Contract | None:
    """The one builder of what a session's status announces (`target`: a SessionStatus)."""
    if target == "complete":
        # The row holds the charge Stripe reported (move_payment_session wrote it).
        return PaymentSucceeded(
            order_id=change.order_id,
            session_id=change.session_id,
            payment_intent_id=change.payment_intent_id,
            amount=change.amount_total,
            currency=change.currency.lower(),
        )
    if target == "failed":
        return PaymentFailed(
            order_id=change.order_id,
            session_id=change.session_id,
            reason=reason or "payment failed",
        )
    if target == "expired":
        return PaymentExpired(order_id=change.order_id, session_id=change.session_id)
    if target == "processing":
        # A bank debit: paid, not settled. The saga shows it and waits its own (long) window
        # instead of the session's expiry; the outcome follows days later.
        return PaymentPending(
            order_id=change.order_id, session_id=change.session_id, status="processing"
        )
    return None  # open: no outcome yet


async def _unmoved_session(db: AsyncSession, obj: dict[str, Any], kind: str) -> EventOutcome:
    """The outcome of a session event that moved no row: the row is past it, not stored yet,
    or there is none to come (a session we did not create)."""
    session_id = obj["id"]
    if await repository.session_exists(db, session_id):
        log.info(
            "stripe event %s does not move the session forward; stored only",
            kind,
            extra=log_fields(session_id=session_id),
        )
        return APPLIED
    if not could_be_our_session(obj):
        return _ignored(kind, session_id, FOREIGN_SESSION)
    log.warning(
        "stripe event for a checkout session not stored yet, kept for replay",
        extra=log_fields(session_id=session_id, event_type=kind),
    )
    return WAITING


async def _track_refund(
    db: AsyncSession, outbox: Outbox, obj: dict[str, Any], kind: str
) -> EventOutcome:
    refund_id = obj.get("id")
    if not isinstance(refund_id, str):
        return APPLIED
    reason = obj.get("failure_reason")
    change = await settle_refund(
        db,
        outbox,
        stripe_refund_id=refund_id,
        target=refund_status(obj.get("status")),
        stripe_reason=reason if isinstance(reason, str) else None,
    )
    if change is not None or await repository.refund_exists(db, refund_id):
        return APPLIED
    metadata = obj.get("metadata") or {}
    if metadata.get("refund_key"):
        return WAITING  # ours, but the transaction that stores it has not committed yet
    intent = _intent_id(obj)
    order_id = None if intent is None else await repository.order_paid_by(db, intent)
    if order_id is None:
        return _ignored(kind, refund_id, FOREIGN_PAYMENT)
    return await _record_external_refund(db, obj, refund_id, order_id, kind)


async def _record_external_refund(
    db: AsyncSession, obj: dict[str, Any], refund_id: str, order_id: str, kind: str
) -> EventOutcome:
    """Records a refund of the order's payment made outside this service (the Dashboard) as a
    refund of the order, so that it counts against what the saga may still refund."""
    amount, status = obj.get("amount"), refund_status(obj.get("status"))
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        return _ignored(kind, refund_id, "refund without an amount")
    # Under the session row's lock, as handle_refund_payment holds it: the hold below and the
    # saga's refunds of this order take their turns, and a second event about this refund,
    # applied by another replica, finds the row this one writes.
    paid = await repository.locked_payment_session(db, order_id)
    if paid is None or await repository.refund_exists(db, refund_id):
        return APPLIED
    holds = status in REFUND_HOLDS_MONEY
    if holds and not await repository.hold_refund_amount(db, order_id=order_id, amount=amount):
        # Stripe made it, so it fits the charge: either a refund of ours that failed at Stripe
        # still holds its amount here, or the session's success is not applied here yet. Its
        # event (or the reconciler) catches up; this one is replayed until then.
        log.warning(
            "refund made outside this service does not fit what is left to refund; kept for replay",
            extra=log_fields(order_id=order_id, refund_id=refund_id, amount=amount),
        )
        return WAITING
    reason = obj.get("failure_reason")
    await repository.add_refund(
        db,
        order_id=order_id,
        refund_key=external_refund_key(refund_id),
        stripe_refund_id=refund_id,
        amount=amount,
        reason=EXTERNAL_REFUND_REASON,
        trace_id=paid.trace_id,
        status=status,
        failure_reason=refund_failure_reason(status, reason if isinstance(reason, str) else None),
    )
    log.warning(
        "refund made outside this service recorded (%s, %d)",
        status,
        amount,
        extra=log_fields(order_id=order_id, refund_id=refund_id),
    )
    return APPLIED


async def _track_charge_refunds(
    db: AsyncSession, outbox: Outbox, charge: dict[str, Any], kind: str
) -> EventOutcome:
    """charge.refunded: each refund the charge lists, as its own refund event would be."""
    intent = _intent_id(charge)
    if intent is None or await repository.order_paid_by(db, intent) is None:
        return _ignored(kind, charge.get("id"), FOREIGN_PAYMENT)
    # Recent API versions leave `refunds` out of the charge; refund.updated covers those.
    refunds = (charge.get("refunds") or {}).get("data") or []
    outcomes = [await _track_refund(db, outbox, r, kind) for r in refunds if isinstance(r, dict)]
    return APPLIED if all(outcome.applied for outcome in outcomes) else WAITING


async def _track_dispute(
    db: AsyncSession, outbox: Outbox, event: dict[str, Any], obj: dict[str, Any], kind: str
) -> EventOutcome:
    """Records what a charge.dispute.* event shows of a dispute of one of our payments (found
    by the disputed payment intent); a change of its status is logged at warning and said to
    the saga (`PaymentDisputed`), which shows it on the order."""
    dispute_id, intent = obj.get("id"), _intent_id(obj)
    order_id = None if intent is None else await repository.order_paid_by(db, intent)
    if order_id is None or intent is None or not isinstance(dispute_id, str):
        return _ignored(kind, dispute_id, FOREIGN_PAYMENT)
    at, amount = _moment(event.get("created")), obj.get("amount")
    state = DisputeState(
        status=str(obj.get("status")),
        amount=amount if isinstance(amount, int) else 0,
        currency=str(obj.get("currency") or "").lower(),
        reason=str(obj.get("reason") or "general"),
        at=at,
    )
    charge = obj.get("charge")
    stored = await repository.record_dispute(
        db,
        dispute_id=dispute_id,
        order_id=order_id,
        payment_intent_id=intent,
        charge_id=charge if isinstance(charge, str) else None,
        opened_at=_moment(obj.get("created"), default=at),
        state=state,
    )
    change = dispute_changes(stored, state, order_id=order_id, dispute_id=dispute_id)
    if change is not None:
        await outbox.emit(
            db,
            PaymentDisputed(
                order_id=change.order_id,
                dispute_id=change.dispute_id,
                status=change.status,
                amount=change.amount,
                currency=change.currency,
                reason=change.reason,
            ),
            correlation_id=change.order_id,
        )
        log.warning(
            "payment disputed: dispute %s is %s (%s, %d %s)",
            dispute_id,
            change.status,
            change.reason,
            change.amount,
            change.currency,
            extra=log_fields(order_id=order_id, previous_status=change.previous_status),
        )
    return APPLIED


def _moment(created: Any, *, default: datetime | None = None) -> datetime:
    """A Stripe `created` (Unix seconds) as a UTC time; `default` (else now) when absent."""
    if isinstance(created, int) and not isinstance(created, bool):
        return datetime.fromtimestamp(created, UTC)
    return default or datetime.now(UTC)


async def settle_refund(
    db: AsyncSession,
    outbox: Outbox,
    *,
    stripe_refund_id: str,
    target: RefundStatus,
    stripe_reason: str | None,
) -> RefundChange | None:
    """Moves the refund to `target` (Stripe's status of it, from an event or the reconciler)
    in the caller's transaction; None when it was not in a status that may move there. A
    refund that will not reach the shopper announces RefundFailed once; one that succeeded
    announces nothing: PaymentRefunded answered the command when Stripe accepted it."""
    if target == "pending":
        return None  # still on its way
    reason = refund_failure_reason(target, stripe_reason)
    change = await repository.move_refund(
        db, stripe_refund_id=stripe_refund_id, to=target, failure_reason=reason
    )
    if change is None:
        return None
    fields = log_fields(order_id=change.order_id, refund_id=stripe_refund_id)
    failure = refund_failure(target)
    if failure is None or reason is None:  # succeeded (a reason comes with every failure)
        log.info("refund %s", target, extra=fields)
        return change
    if is_external_refund(change.refund_key):
        # Nobody here asked for it, so there is nobody to tell; its amount is free again.
        log.warning("refund made outside this service %s: %s", target, reason, extra=fields)
        return change
    announced = _refund_failed(change.order_id, change.refund_key, change.amount, failure, reason)
    await outbox.emit(db, announced, correlation_id=change.trace_id)
    log.warning("refund %s at stripe: %s", target, reason, extra=fields)
    return change


def refund_answer(row: Refund) -> Contract:
    """The answer to RefundPayment from the refund's row: PaymentRefunded while Stripe has the
    refund (pending or succeeded), RefundFailed once it will not reach the shopper."""
    failure = refund_failure(row.status)
    # A row that failed before failure reasons were stored has none: the generic one then.
    reason = row.failure_reason or refund_failure_reason(row.status, None)
    if failure is None or reason is None:
        return PaymentRefunded(order_id=row.order_id, refund_key=row.refund_key, amount=row.amount)
    return _refund_failed(row.order_id, row.refund_key, row.amount, failure, reason)


def _refund_failed(
    order_id: str, refund_key: str, amount: int, failure: RefundFailure, reason: str
) -> RefundFailed:
    return RefundFailed(
        order_id=order_id, refund_key=refund_key, amount=amount, status=failure, reason=reason
    )


async def apply_waiting(db: AsyncSession, outbox: Outbox, object_id: str) -> int:
    """Applies events stored before `object_id`'s row existed; how many were applied."""
    applied = 0
    for stored in await repository.unprocessed_events(db, object_id=object_id):
        if (await apply_stored(db, outbox, stored)).applied:
            applied += 1
    return applied
