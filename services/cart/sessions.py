"""Checkout sessions in the database: issued, renewed on cart changes, recovered, cleaned up.

The rules are in `session_domain`; this module loads what they need and stores what they decide.
Every function runs inside the caller's transaction, after the caller locked the cart
(`repo.get_cart(for_update=True)` or `repo.touch_open_cart`), so one cart's sessions change one
request at a time; the partial unique index (one active session per cart) backs that up.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession

from services.cart import domain
from services.cart import repository as repo
from services.cart import session_domain as rules
from services.cart.models import Cart, CheckoutSession, utcnow
from services.cart.settings import CartSettings
from shared.logging import log_fields
from shared.runtime import ServiceRuntime

log = logging.getLogger("services.cart.sessions")


@dataclass(frozen=True)
class Issued:
    row: CheckoutSession
    created: bool


def facts(row: CheckoutSession) -> rules.SessionFacts:
    return rules.SessionFacts(
        status=row.status,
        expires_at=row.expires_at,
        content_hash=row.content_hash,
        use_credits=row.use_credits,
        replaced_by=row.replaced_by,
    )


async def cart_facts(session: AsyncSession, cart: Cart) -> rules.CartFacts:
    items = await repo.line_items(session, cart.id)
    return rules.CartFacts(status=cart.status, currency=cart.currency, items=items)


async def choose(
    session: AsyncSession, *, cart: Cart, use_credits: bool, now: datetime, ttl_seconds: int
) -> Issued:
    """The cart's active session for this content and payment choice: the current one while it
    still stands for them, else a new one, not yet stored, with the current one retired. Raises
    the cart's domain errors (not open, empty, an item not on sale, mixed currencies)."""
    domain.ensure_open(cart.status)
    priced = domain.price_checkout(
        await repo.line_items(session, cart.id), use_credits=use_credits, now=now
    )
    domain.ensure_currency(cart.currency, priced.currency)
    current = await repo.active_session(session, cart.id)
    current_facts = facts(current) if current is not None else None
    if current is not None and rules.reusable(
        current_facts, priced=priced, use_credits=use_credits, now=now
    ):
        return Issued(current, created=False)
    row = CheckoutSession(
        id=str(uuid.uuid4()),
        cart_id=cart.id,
        user_id=cart.user_id,
        status=rules.ACTIVE,
        use_credits=use_credits,
        snapshot=rules.snapshot_of(priced),
        content_hash=rules.content_hash(priced),
        expires_at=rules.expiry(now, ttl_seconds),
        checkout_id=None,
        replaced_by=None,
        created_at=now,
        updated_at=now,
    )
    # Retired before the new row is stored: the partial unique index allows one active row per
    # cart. With none active there is nothing to retire, and none can appear: the cart is locked.
    if current is not None:
        await repo.retire_active_session(session, cart_id=cart.id, replaced_by=row.id, now=now)
    return Issued(row, created=True)


async def issue(
    session: AsyncSession, *, cart: Cart, use_credits: bool, now: datetime, ttl_seconds: int
) -> Issued:
    """`choose`, and the new session (if it is one) stored as active."""
    issued = await choose(
        session, cart=cart, use_credits=use_credits, now=now, ttl_seconds=ttl_seconds
    )
    if issued.created:
        await repo.add_session(session, issued.row)
    return issued


async def renew_after_change(
    session: AsyncSession, *, cart: Cart, now: datetime, ttl_seconds: int
) -> CheckoutSession | None:
    """After a line change: a shopper who was in checkout gets a new session for the new
    content (same payment choice); the old one is invalidated. Returns the cart's active
    session afterwards, None when there is none (no checkout started, or the cart can no
    longer be checked out as it is)."""
    current = await repo.active_session(session, cart.id)
    if current is None:
        return None
    if rules.effective_status(facts(current), now) != rules.ACTIVE:
        await repo.retire_active_session(session, cart_id=cart.id, replaced_by=None, now=now)
        return None
    try:
        issued = await issue(
            session, cart=cart, use_credits=current.use_credits, now=now, ttl_seconds=ttl_seconds
        )
    except domain.CartError:
        await repo.retire_active_session(session, cart_id=cart.id, replaced_by=None, now=now)
        return None
    return issued.row


async def recover(
    session: AsyncSession, *, old: CheckoutSession, cart: Cart, now: datetime, ttl_seconds: int
) -> Issued:
    """An expired session whose cart is unchanged and still checkout-able comes back as the
    cart's active session (a new one, or the one an earlier recovery made)."""
    problem = rules.recovery_problem(facts(old), await cart_facts(session, cart), now)
    if problem is not None:
        raise problem
    issued = await issue(
        session, cart=cart, use_credits=old.use_credits, now=now, ttl_seconds=ttl_seconds
    )
    await repo.mark_recovered(session, session_id=old.id, replaced_by=issued.row.id, now=now)
    return issued


# --- cleanup ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cleanup:
    expired: int
    deleted: int


async def clean_up(runtime: ServiceRuntime, *, now: datetime) -> Cleanup:
    """Marks active sessions past their expiry `expired`, and deletes expired and invalidated
    sessions that ended more than the retention period ago (completed ones are kept).
    Safe to run on every replica at once: both statements are idempotent."""
    settings = cast(CartSettings, runtime.settings)
    async with runtime.transaction() as session:
        expired = await repo.expire_sessions(session, now)
        deleted = await repo.delete_ended_sessions(
            session, ended_before=now - timedelta(seconds=settings.session_retention_seconds)
        )
    return Cleanup(expired=expired, deleted=deleted)


async def clean_up_sessions(runtime: ServiceRuntime) -> None:
    """Background task: `clean_up` every `session_cleanup_interval_seconds`."""
    settings = cast(CartSettings, runtime.settings)
    while True:
        try:
            done = await clean_up(runtime, now=utcnow())
            if done.expired or done.deleted:
                log.info(
                    "checkout sessions cleaned up",
                    extra=log_fields(expired=done.expired, deleted=done.deleted),
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            # A database hiccup: the next tick does the same work again.
            log.warning("checkout session cleanup failed", exc_info=True)
        await asyncio.sleep(settings.session_cleanup_interval_seconds)
