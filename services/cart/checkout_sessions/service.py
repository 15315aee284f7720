"""Checkout-session use cases: issued, renewed on cart changes, validated, recovered, checked
out, cleaned up.

The rules are in `rules`; this module loads what they need and stores what they decide.
Every function but the cleanup runs inside the caller's transaction `db`, after the caller
locked the cart (`repo.get_cart(for_update=True)` or `repo.touch_open_cart`), so one cart's
sessions change one request at a time; the partial unique index (one active session per cart)
backs that up. Refusals are domain errors (`rules`, `domain`); the API maps them to HTTP.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.cart import domain
from services.cart import repository as repo
from services.cart.checkout_sessions import rules, store
from services.cart.deps import CartRuntime
from services.cart.models import Cart, CheckoutSession, utcnow
from shared.logging import log_fields
from shared.periodic import every

log = logging.getLogger("services.cart.checkout_sessions")


@dataclass(frozen=True)
class Issued:
    row: CheckoutSession
    created: bool


@dataclass(frozen=True)
class Validation:
    """A session as validated now: the first reason a checkout with it would be refused (None:
    it would be accepted), and whether the cart still prices as its snapshot."""

    problem: domain.CartError | None
    cart_matches: bool


def facts(row: CheckoutSession) -> rules.SessionFacts:
    return rules.SessionFacts(
        status=row.status,
        expires_at=row.expires_at,
        content_hash=row.content_hash,
        use_credits=row.use_credits,
        replaced_by=row.replaced_by,
    )


async def cart_facts(db: AsyncSession, cart: Cart) -> rules.CartFacts:
    items = await repo.line_items(db, cart.id)
    return rules.CartFacts(status=cart.status, currency=cart.currency, items=items)


async def current_session_id(db: AsyncSession, cart_id: str, *, now: datetime) -> str | None:
    """The id of the cart's active session while it is unexpired, else None."""
    active = await store.active_session(db, cart_id)
    return active.id if active is not None and active.expires_at > now else None


async def choose(
    db: AsyncSession, *, cart: Cart, use_credits: bool, now: datetime, ttl_seconds: int
) -> Issued:
    """The cart's active session for this content and payment choice: the current one while it
    still stands for them, else a new one, not yet stored, with the current one retired. Raises
    the cart's domain errors (not open, empty, an item not on sale, mixed currencies)."""
    domain.ensure_open(cart.status)
    priced = domain.price_checkout(
        await repo.line_items(db, cart.id), use_credits=use_credits, now=now
    )
    domain.ensure_currency(cart.currency, priced.currency)
    current = await store.active_session(db, cart.id)
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
        await store.retire_active_session(db, cart_id=cart.id, replaced_by=row.id, now=now)
    return Issued(row, created=True)


async def issue(
    db: AsyncSession, *, cart: Cart, use_credits: bool, now: datetime, ttl_seconds: int
) -> Issued:
    """`choose`, and the new session (if it is one) stored as active."""
    issued = await choose(db, cart=cart, use_credits=use_credits, now=now, ttl_seconds=ttl_seconds)
    if issued.created:
        await store.add_session(db, issued.row)
    return issued


async def renew_after_change(
    db: AsyncSession, *, cart: Cart, now: datetime, ttl_seconds: int
) -> CheckoutSession | None:
    """After a line change: a shopper who was in checkout gets a new session for the new
    content (same payment choice); the old one is invalidated. Returns the cart's active
    session afterwards, None when there is none (no checkout started, or the cart can no
    longer be checked out as it is)."""
    current = await store.active_session(db, cart.id)
    if current is None:
        return None
    if rules.effective_status(facts(current), now) != rules.ACTIVE:
        await store.retire_active_session(db, cart_id=cart.id, replaced_by=None, now=now)
        return None
    try:
        issued = await issue(
            db, cart=cart, use_credits=current.use_credits, now=now, ttl_seconds=ttl_seconds
        )
    except domain.CartError:
        await store.retire_active_session(db, cart_id=cart.id, replaced_by=None, now=now)
        return None
    return issued.row


async def validate(db: AsyncSession, *, row: CheckoutSession, now: datetime) -> Validation:
    """Whether `row` can be checked out now, and why not; changes nothing."""
    cart = await repo.get_cart(db, cart_id=row.cart_id, user_id=row.user_id)
    if cart is None:  # the foreign key makes this impossible; answer as if never issued
        raise rules.SessionNotFound()
    cart_now = await cart_facts(db, cart)
    problem = rules.checkout_problem(facts(row), cart_now, now)
    matches = rules.current_hash(cart_now, use_credits=row.use_credits) == row.content_hash
    return Validation(problem=problem, cart_matches=matches)


async def recover(
    db: AsyncSession, *, old: CheckoutSession, cart: Cart, now: datetime, ttl_seconds: int
) -> Issued:
    """An expired session whose cart is unchanged and still checkout-able comes back as the
    cart's active session (a new one, or the one an earlier recovery made). Raises
    `RecoveryRefused` with the reason otherwise."""
    problem = rules.recovery_problem(facts(old), await cart_facts(db, cart), now)
    if problem is not None:
        raise rules.RecoveryRefused(problem)
    try:
        issued = await issue(
            db, cart=cart, use_credits=old.use_credits, now=now, ttl_seconds=ttl_seconds
        )
    except domain.CartError as exc:
        raise rules.RecoveryRefused(exc) from exc
    await store.mark_recovered(db, session_id=old.id, replaced_by=issued.row.id, now=now)
    return issued


# --- checking out ----------------------------------------------------------------------------


async def session_for_checkout(
    db: AsyncSession,
    *,
    cart: Cart,
    user_id: str,
    session_id: str | None,
    use_credits: bool | None,
    now: datetime,
    ttl_seconds: int,
) -> Issued:
    """The session a checkout of the (locked) `cart` pays for. Without `session_id`: the cart's
    active session, renewed or issued (a new one is not stored yet: `check_out_session` stores
    it completed). With it: exactly that session, which must still be good to check out."""
    if session_id is None:
        return await choose(
            db, cart=cart, use_credits=bool(use_credits), now=now, ttl_seconds=ttl_seconds
        )
    found = await store.get_session(db, session_id=session_id, user_id=user_id)
    if found is None or found.cart_id != cart.id:
        raise rules.SessionNotFound()
    if use_credits is not None and use_credits != found.use_credits:
        raise rules.UseCreditsConflict()
    problem = rules.checkout_problem(facts(found), await cart_facts(db, cart), now)
    if problem is not None:
        raise problem
    return Issued(found, created=False)


async def check_out_session(
    db: AsyncSession, chosen: Issued, *, checkout_id: str, now: datetime
) -> None:
    """Marks the session checked out by `checkout_id` (stored before: the session names it).
    Raises `SessionNotActive` when another checkout took it first."""
    if chosen.created:
        # Issued for this checkout and seen by no one else: stored completed straight away
        # (after the checkout row it names) rather than stored active and then completed.
        chosen.row.status = rules.COMPLETED
        chosen.row.checkout_id = checkout_id
        await store.add_session(db, chosen.row)
    elif not await store.complete_session(
        db, session_id=chosen.row.id, checkout_id=checkout_id, now=now
    ):
        raise rules.SessionNotActive()


# --- cleanup ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cleanup:
    expired: int
    deleted: int


async def clean_up(runtime: CartRuntime, *, now: datetime) -> Cleanup:
    """Marks active sessions past their expiry `expired`, and deletes expired and invalidated
    sessions that ended more than the retention period ago (completed ones are kept).
    Safe to run on every replica at once: both statements are idempotent."""
    retention = timedelta(seconds=runtime.settings.session_retention_seconds)
    async with runtime.transaction() as db:
        expired = await store.expire_sessions(db, now)
        deleted = await store.delete_ended_sessions(db, ended_before=now - retention)
    return Cleanup(expired=expired, deleted=deleted)


async def _clean_up_round(runtime: CartRuntime) -> None:
    done = await clean_up(runtime, now=utcnow())
    if done.expired or done.deleted:
        log.info(
            "checkout sessions cleaned up",
            extra=log_fields(expired=done.expired, deleted=done.deleted),
        )


def _cleanup_interval(runtime: CartRuntime) -> float:
    return runtime.settings.session_cleanup_interval_seconds


# Background task: `clean_up` every `session_cleanup_interval_seconds`.
clean_up_sessions = every(_cleanup_interval, _clean_up_round, name="checkout session cleanup")
