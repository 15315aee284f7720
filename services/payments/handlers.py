"""One async handler per message type the payments service consumes.

Each runs inside the dispatcher's transaction with the inbox row already claimed; beyond the
inbox, every effect has its own unique key or status guard, so a second message about the same
order (a saga retry, not a redelivery) replays the first outcome instead of repeating it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from services.payments import ledger, repository, stripe_events
from services.payments.domain import (
    ASK_STRIPE,
    EXPIRE_AT_STRIPE,
    NO_SESSION,
    REFUND_HOLDS_MONEY,
    InquiryRefused,
    InsufficientCredits,
    PaymentWindowPassed,
    RefundKeyReused,
    RefundStatus,
    SessionStatus,
    as_utc,
    checkout_expiry,
    checkout_url,
    inquiry_step,
    lines_total,
    refund_failure_reason,
    refund_status,
)
from services.payments.models import PaymentSession, Refund
from services.payments.settings import PaymentsSettings
from services.payments.stripe_gateway import CheckoutSession, StripeCallFailed, StripeGateway
from shared.dispatch import Handler, MessageContext
from shared.messages import Contract
from shared.messages.contracts import (
    CaptureCredits,
    CreatePaymentSession,
    CreditsCaptured,
    CreditsGranted,
    CreditsRefunded,
    CreditsRejected,
    CreditsReleased,
    CreditsReserved,
    ExpirePaymentSession,
    GrantCredits,
    InquirePayment,
    PaymentPending,
    PaymentSessionCreated,
    PaymentSessionFailed,
    RefundCredits,
    RefundPayment,
    ReleaseCredits,
    ReserveCredits,
)

log = logging.getLogger("services.payments.handlers")


# --- credits ---------------------------------------------------------------------------------


async def handle_reserve_credits(ctx: MessageContext, msg: ReserveCredits) -> None:
    try:
        held = await ledger.reserve(
            ctx.db,
            user_id=msg.user_id,
            order_id=msg.order_id,
            credits=msg.credits,
            trace_id=ctx.trace_id,
        )
    except InsufficientCredits as exc:
        await ctx.emit(
            CreditsRejected(
                order_id=msg.order_id, reason="insufficient_credits", available=exc.available
            )
        )
        return
    if held.status == "released":  # released (or compensated) before this reserve arrived
        balance = await ledger.balance_of(ctx.db, msg.user_id)
        await ctx.emit(
            CreditsRejected(
                order_id=msg.order_id, reason="reservation_closed", available=balance.available
            )
        )
        return
    await ctx.emit(CreditsReserved(order_id=msg.order_id, credits=held.credits))


async def handle_capture_credits(ctx: MessageContext, msg: CaptureCredits) -> None:
    captured = await ledger.capture(
        ctx.db, order_id=msg.order_id, credits=msg.credits, trace_id=ctx.trace_id
    )
    await ctx.emit(CreditsCaptured(order_id=msg.order_id, credits=captured))


async def handle_release_credits(ctx: MessageContext, msg: ReleaseCredits) -> None:
    released = await ledger.release(
        ctx.db, order_id=msg.order_id, user_id=msg.user_id, trace_id=ctx.trace_id
    )
    await ctx.emit(CreditsReleased(order_id=msg.order_id, credits=released))


async def handle_grant_credits(ctx: MessageContext, msg: GrantCredits) -> None:
    await ledger.add_credits(
        ctx.db,
        user_id=msg.user_id,
        credits=msg.credits,
        reference=f"grant:{msg.grant_id}",
        trace_id=ctx.trace_id,
        order_id=msg.order_id,
        memo=msg.reason,
    )
    # Emitted on a repeat too: the sender may still be waiting for its answer.
    await ctx.emit(CreditsGranted(grant_id=msg.grant_id, user_id=msg.user_id, credits=msg.credits))


async def handle_refund_credits(ctx: MessageContext, msg: RefundCredits) -> None:
    # RefundExceedsCapture / RefundKeyReused propagate: the message dead-letters with the reason.
    refunded = await ledger.refund(
        ctx.db,
        order_id=msg.order_id,
        user_id=msg.user_id,
        refund_key=msg.refund_key,
        credits=msg.credits,
        trace_id=ctx.trace_id,
        memo=msg.reason,
    )
    await ctx.emit(
        CreditsRefunded(order_id=msg.order_id, refund_key=msg.refund_key, credits=refunded)
    )


# --- Stripe Checkout -------------------------------------------------------------------------


async def handle_create_payment_session(
    ctx: MessageContext,
    msg: CreatePaymentSession,
    *,
    gateway: StripeGateway,
    settings: PaymentsSettings,
) -> None:
    stored = await repository.payment_session_of(ctx.db, msg.order_id)
    if stored is None:  # a stored session means this order was answered before: answer again
        try:
            checkout = await _open_checkout(ctx, msg, gateway=gateway, settings=settings)
        except StripeCallFailed as exc:
            await ctx.emit(PaymentSessionFailed(order_id=msg.order_id, reason=exc.reason))
            return
        stored = await repository.add_payment_session(
            ctx.db, order_id=msg.order_id, checkout=checkout, trace_id=ctx.trace_id
        )
    await ctx.emit(
        PaymentSessionCreated(
            order_id=msg.order_id,
            session_id=stored.session_id,
            url=stored.url,
            expires_at=as_utc(stored.expires_at),
        )
    )
    # Stripe may have reported on the session before this row was stored (a call that timed out
    # after Stripe acted): those events were kept and now apply, after the created reply.
    await stripe_events.apply_waiting(ctx.db, ctx.outbox, stored.session_id)


async def _open_checkout(
    ctx: MessageContext,
    msg: CreatePaymentSession,
    *,
    gateway: StripeGateway,
    settings: PaymentsSettings,
) -> CheckoutSession:
    if lines_total(msg.lines) != msg.amount_total:
        # Stripe charges the sum of the lines; a different total is a bug upstream, not a price.
        raise StripeCallFailed(
            f"amount_mismatch: lines sum to {lines_total(msg.lines)}, total is {msg.amount_total}",
            transient=False,
        )
    try:
        expiry = checkout_expiry(
            msg.expires_at, sent_at=ctx.envelope.created_at, now=datetime.now(UTC)
        )
    except PaymentWindowPassed as exc:
        raise StripeCallFailed(str(exc), transient=False) from None
    return await gateway.create_checkout_session(
        order_id=msg.order_id,
        currency=msg.currency,
        lines=msg.lines,
        expires_at=expiry,
        success_url=checkout_url(settings.checkout_success_url, order_id=msg.order_id),
        cancel_url=checkout_url(settings.checkout_cancel_url, order_id=msg.order_id),
        metadata={"order_id": msg.order_id, "trace_id": ctx.trace_id},
    )


async def handle_expire_payment_session(
    ctx: MessageContext, msg: ExpirePaymentSession, *, gateway: StripeGateway
) -> None:
    row = await repository.payment_session_of(ctx.db, msg.order_id)
    if row is None or row.status != "open":
        return  # nothing open to expire; a completed session is the saga's refund to make
    try:
        await gateway.expire_checkout_session(order_id=msg.order_id, session_id=row.session_id)
    except StripeCallFailed as exc:
        if exc.transient:
            raise  # the bus redelivers with backoff; the idempotency key keeps it one expiry
        # Stripe only refuses when the session is no longer open: its webhook tells us how.
        log.warning("stripe refused to expire %s: %s", row.session_id, exc.reason)
        return
    await stripe_events.settle_session(
        ctx.db, ctx.outbox, session_id=row.session_id, target="expired"
    )


async def handle_inquire_payment(
    ctx: MessageContext, msg: InquirePayment, *, gateway: StripeGateway
) -> None:
    row = await repository.payment_session_of(ctx.db, msg.order_id)
    if row is None:
        # The saga asks only once it has a session, so its CreatePaymentSession is not applied
        # yet (waiting in a retry queue): the session and its outcome are still to come.
        await ctx.emit(PaymentPending(order_id=msg.order_id, session_id=None, status=NO_SESSION))
        return
    now = datetime.now(UTC)
    if inquiry_step(row.status, None, now) == ASK_STRIPE:
        remote = await _stripe_view(row, gateway=gateway)
        step = inquiry_step(row.status, remote, now)
        if step == EXPIRE_AT_STRIPE:
            remote = await _closed_at_stripe(row, gateway=gateway)
            step = inquiry_step(row.status, remote, now, may_expire=False)
        if step.target is not None and await _settled(ctx, row, remote, step.target):
            return
    # Never a guess: the outcome the row holds, announced again, or that there is none yet.
    waiting = PaymentPending(order_id=msg.order_id, session_id=row.session_id, status=row.status)
    await ctx.emit(stripe_events.stored_announcement(row) or waiting)


async def _stripe_view(row: PaymentSession, *, gateway: StripeGateway) -> CheckoutSession:
    try:
        return await gateway.retrieve_checkout_session(
            order_id=row.order_id, session_id=row.session_id
        )
    except StripeCallFailed as exc:
        if exc.transient:
            raise  # the bus redelivers with backoff: the saga's question waits, never guessed
        raise InquiryRefused(f"stripe refused to show {row.session_id}: {exc.reason}") from exc


async def _closed_at_stripe(row: PaymentSession, *, gateway: StripeGateway) -> CheckoutSession:
    """The session after expiring it at Stripe, so no payment can land after our answer."""
    try:
        return await gateway.expire_checkout_session(
            order_id=row.order_id, session_id=row.session_id
        )
    except StripeCallFailed as exc:
        if exc.transient:
            raise
        # Stripe only refuses when the session is no longer open (paid as we closed it).
        log.warning("stripe refused to expire %s: %s", row.session_id, exc.reason)
        return await _stripe_view(row, gateway=gateway)


async def _settled(
    ctx: MessageContext, row: PaymentSession, remote: CheckoutSession, target: SessionStatus
) -> bool:
    """Settles the row as the reconciler would; True when that announced the outcome (the
    answer). Else the row is read again: a webhook or the reconciler may have settled it first,
    and what it settled to is the answer, never a second, different outcome."""
    change = await stripe_events.settle_from_stripe(
        ctx.db, ctx.outbox, remote, target, found_by="the payment inquiry"
    )
    if change is not None:  # every move announces, `processing` too (PaymentPending)
        return True
    # Read from the database, not the object in hand: the ORM UPDATE sets our target on it even
    # when the database row had already moved and did not match (its session sync evaluates the
    # WHERE against the stale object). Without this, PostgreSQL tests announced a second outcome.
    await ctx.db.refresh(row)
    return False


async def handle_refund_payment(
    ctx: MessageContext, msg: RefundPayment, *, gateway: StripeGateway
) -> None:
    # The order's session row is locked first: refunds of one order queue here, so the refund
    # read below and the amount check see every refund committed before.
    paid = await repository.locked_payment_session(ctx.db, msg.order_id)
    refund = await repository.refund_of(ctx.db, msg.order_id, msg.refund_key)
    if refund is not None:
        if refund.amount != msg.amount:
            raise RefundKeyReused(f"refund key {msg.refund_key!r} of {msg.order_id} reused")
        # The saga sent it again: the stored outcome again (RefundFailed for a refund Stripe
        # refused or that failed since), without asking Stripe.
        await ctx.emit(stripe_events.refund_answer(refund))
        return
    refund = await _refund_at_stripe(ctx, msg, paid, gateway=gateway)
    await ctx.emit(stripe_events.refund_answer(refund))
    if refund.stripe_refund_id is not None:
        # Stripe may have reported on the refund before this row was stored (a call that timed
        # out after Stripe acted): those events apply now, after the answer.
        await stripe_events.apply_waiting(ctx.db, ctx.outbox, refund.stripe_refund_id)


async def _refund_at_stripe(
    ctx: MessageContext, msg: RefundPayment, paid: PaymentSession | None, *, gateway: StripeGateway
) -> Refund:
    # Our own refusals are answered as Stripe's are (RefundFailed, a `rejected` row), never
    # dead-lettered: else the saga resends at each refunding deadline and the order never says
    # why. No amount was held for them, so none is released.
    if paid is None or paid.status != "complete" or paid.payment_intent_id is None:
        return await _stored_refund(ctx, msg, None, "rejected", "no_completed_payment", held=False)
    if not await repository.hold_refund_amount(ctx.db, order_id=msg.order_id, amount=msg.amount):
        left = await repository.amount_left_to_refund(ctx.db, msg.order_id)
        exceeds = f"exceeds_remaining: {msg.amount} requested, {left} left of the payment"
        return await _stored_refund(ctx, msg, None, "rejected", exceeds, held=False)
    try:
        made = await gateway.create_refund(
            order_id=msg.order_id,
            refund_key=msg.refund_key,
            payment_intent_id=paid.payment_intent_id,
            amount=msg.amount,
            reason=msg.reason,
        )
    except StripeCallFailed as exc:
        if exc.transient:
            # The bus redelivers with backoff; the idempotency key <order_id>:refund:<key>
            # makes every attempt the same one refund at Stripe.
            raise
        # Stripe's answer, not a passing trouble (already refunded in the Dashboard, more than
        # is left, the key reused): asking again gets the same, as Stripe keeps it for the key.
        log.warning("stripe refused a refund of %s: %s", msg.order_id, exc.reason)
        return await _stored_refund(ctx, msg, None, "rejected", exc.reason)
    status = refund_status(made.status)
    failure = refund_failure_reason(status, made.failure_reason)
    return await _stored_refund(ctx, msg, made.id, status, failure)


async def _stored_refund(
    ctx: MessageContext,
    msg: RefundPayment,
    stripe_refund_id: str | None,
    status: RefundStatus,
    failure: str | None,
    *,
    held: bool = True,
) -> Refund:
    """Stores the refund's outcome; `held`: its amount was counted against the payment."""
    if held and status not in REFUND_HOLDS_MONEY:  # pays nothing out: a retry under a new key fits
        await repository.release_refund_amount(ctx.db, order_id=msg.order_id, amount=msg.amount)
    return await repository.add_refund(
        ctx.db,
        order_id=msg.order_id,
        refund_key=msg.refund_key,
        stripe_refund_id=stripe_refund_id,
        amount=msg.amount,
        reason=msg.reason,
        trace_id=ctx.trace_id,
        status=status,
        failure_reason=failure,
    )


# These call Stripe: never grouped with other messages (shared/dispatch.py).
APPLIED_ALONE: frozenset[type[Contract]] = frozenset(
    {CreatePaymentSession, ExpirePaymentSession, InquirePayment, RefundPayment}
)


def build_handlers(
    *, gateway: StripeGateway, settings: PaymentsSettings
) -> Mapping[type[Contract], Handler]:
    return {
        ReserveCredits: handle_reserve_credits,
        CaptureCredits: handle_capture_credits,
        ReleaseCredits: handle_release_credits,
        GrantCredits: handle_grant_credits,
        CreatePaymentSession: functools.partial(
            handle_create_payment_session, gateway=gateway, settings=settings
        ),
        ExpirePaymentSession: functools.partial(handle_expire_payment_session, gateway=gateway),
        InquirePayment: functools.partial(handle_inquire_payment, gateway=gateway),
        RefundCredits: handle_refund_credits,
        RefundPayment: functools.partial(handle_refund_payment, gateway=gateway),
    }
