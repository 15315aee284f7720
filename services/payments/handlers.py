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

from services.payments import ledger, repository
from services.payments.domain import (
    InsufficientCredits,
    as_utc,
    checkout_expiry,
    checkout_url,
    lines_total,
)
from services.payments.settings import PaymentsSettings
from services.payments.stripe_gateway import CheckoutSession, StripeCallFailed, StripeGateway
from shared.dispatch import Handler, MessageContext
from shared.messages import Contract
from shared.messages.contracts import (
    CaptureCredits,
    CreatePaymentSession,
    CreditsCaptured,
    CreditsGranted,
    CreditsRejected,
    CreditsReleased,
    CreditsReserved,
    ExpirePaymentSession,
    GrantCredits,
    PaymentExpired,
    PaymentSessionCreated,
    PaymentSessionFailed,
    ReleaseCredits,
    ReserveCredits,
)

log = logging.getLogger("services.payments.handlers")


# --- credits ---------------------------------------------------------------------------------


async def handle_reserve_credits(ctx: MessageContext, msg: ReserveCredits) -> None:
    try:
        held = await ledger.reserve(
            ctx.session,
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
        balance = await ledger.balance_of(ctx.session, msg.user_id)
        await ctx.emit(
            CreditsRejected(
                order_id=msg.order_id, reason="reservation_closed", available=balance.available
            )
        )
        return
    await ctx.emit(CreditsReserved(order_id=msg.order_id, credits=held.credits))


async def handle_capture_credits(ctx: MessageContext, msg: CaptureCredits) -> None:
    captured = await ledger.capture(
        ctx.session, order_id=msg.order_id, credits=msg.credits, trace_id=ctx.trace_id
    )
    await ctx.emit(CreditsCaptured(order_id=msg.order_id, credits=captured))


async def handle_release_credits(ctx: MessageContext, msg: ReleaseCredits) -> None:
    released = await ledger.release(
        ctx.session, order_id=msg.order_id, user_id=msg.user_id, trace_id=ctx.trace_id
    )
    await ctx.emit(CreditsReleased(order_id=msg.order_id, credits=released))


async def handle_grant_credits(ctx: MessageContext, msg: GrantCredits) -> None:
    await ledger.add_credits(
        ctx.session,
        user_id=msg.user_id,
        credits=msg.credits,
        reference=f"grant:{msg.grant_id}",
        trace_id=ctx.trace_id,
        order_id=msg.order_id,
        memo=msg.reason,
    )
    # Emitted on a repeat too: the sender may still be waiting for its answer.
    await ctx.emit(CreditsGranted(grant_id=msg.grant_id, user_id=msg.user_id, credits=msg.credits))


# --- Stripe Checkout -------------------------------------------------------------------------


async def handle_create_payment_session(
    ctx: MessageContext,
    msg: CreatePaymentSession,
    *,
    gateway: StripeGateway,
    settings: PaymentsSettings,
) -> None:
    stored = await repository.payment_session_of(ctx.session, msg.order_id)
    if stored is None:  # a stored session means this order was answered before: answer again
        try:
            checkout = await _open_checkout(ctx, msg, gateway=gateway, settings=settings)
        except StripeCallFailed as exc:
            await ctx.emit(PaymentSessionFailed(order_id=msg.order_id, reason=exc.reason))
            return
        stored = await repository.add_payment_session(
            ctx.session, order_id=msg.order_id, checkout=checkout, trace_id=ctx.trace_id
        )
    await ctx.emit(
        PaymentSessionCreated(
            order_id=msg.order_id,
            session_id=stored.session_id,
            url=stored.url,
            expires_at=as_utc(stored.expires_at),
        )
    )


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
    return await gateway.create_checkout_session(
        order_id=msg.order_id,
        currency=msg.currency,
        lines=msg.lines,
        expires_at=checkout_expiry(msg.expires_at, datetime.now(UTC)),
        success_url=checkout_url(settings.checkout_success_url, order_id=msg.order_id),
        cancel_url=checkout_url(settings.checkout_cancel_url, order_id=msg.order_id),
        metadata={"order_id": msg.order_id, "trace_id": ctx.trace_id},
    )


async def handle_expire_payment_session(
    ctx: MessageContext, msg: ExpirePaymentSession, *, gateway: StripeGateway
) -> None:
    row = await repository.payment_session_of(ctx.session, msg.order_id)
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
    change = await repository.close_payment_session(
        ctx.session, session_id=row.session_id, status="expired"
    )
    if change is not None:
        await ctx.emit(PaymentExpired(order_id=msg.order_id, session_id=row.session_id))


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
    }
