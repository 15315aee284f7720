"""Checkout-session lifecycle rules, free of I/O.

A checkout session is a priced snapshot of a cart: `active` until it is checked out once
(`completed`), replaced because the cart changed (`invalidated`), or past its `expires_at`
(`expired`). An expired session whose cart still prices the same can be recovered into a new one.

Each rule answers with the *first* reason a session cannot be used, in one fixed order, so that
validating a session (`GET /sessions/{id}`) reports exactly the code a checkout with it would get.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from services.cart.domain import (
    CartError,
    LineItem,
    PricedCheckout,
    Totals,
    ensure_open,
    price_checkout,
    price_lines,
)
from shared.messages.contracts import CheckoutLine


class SessionNotFound(CartError):
    """No session of this id belongs to the caller (or to the cart being checked out)."""

    code = "session_not_found"

    def __init__(self) -> None:
        super().__init__("session not found")


class SessionExpired(CartError):
    code = "session_expired"

    def __init__(self) -> None:
        super().__init__("the checkout session has expired; recover it or start a new one")


class SessionInvalidated(CartError):
    code = "session_invalidated"

    def __init__(self, replaced_by: str | None = None) -> None:
        super().__init__("the cart changed after this checkout session was issued")
        self.replaced_by = replaced_by


class SessionNotActive(CartError):
    """The session was checked out already: a session pays for one checkout only."""

    code = "session_not_active"

    def __init__(self) -> None:
        super().__init__("the checkout session was already checked out")


class SessionNotExpired(CartError):
    code = "session_not_expired"

    def __init__(self) -> None:
        super().__init__("the checkout session is still active; use it as it is")


class UseCreditsConflict(CartError):
    code = "use_credits_conflict"

    def __init__(self) -> None:
        super().__init__("use_credits differs from the checkout session's; omit it or match it")


class CartChanged(CartError):
    code = "cart_changed"

    def __init__(self) -> None:
        super().__init__("the cart no longer prices as this checkout session does")


class RecoveryRefused(CartError):
    """An expired session could not be recovered. Carries the `reason` (the first rule or cart
    error that refused it) and its code and message: a refused recovery is a conflict with the
    session's or the cart's state, whatever the reason."""

    def __init__(self, reason: CartError) -> None:
        super().__init__(str(reason))
        self.code = reason.code
        self.reason = reason


ACTIVE = "active"
COMPLETED = "completed"
EXPIRED = "expired"
INVALIDATED = "invalidated"


@dataclass(frozen=True)
class SessionFacts:
    """What the rules need to know about a stored session."""

    status: str
    expires_at: datetime
    content_hash: str
    use_credits: bool
    replaced_by: str | None = None


@dataclass(frozen=True)
class CartFacts:
    """The cart as it is now: its status and its lines joined with today's catalogue."""

    status: str
    currency: str
    items: Sequence[LineItem]


def expiry(now: datetime, ttl_seconds: int) -> datetime:
    return now + timedelta(seconds=ttl_seconds)


def effective_status(session: SessionFacts, now: datetime) -> str:
    """An active session past its expiry is expired, whether or not cleanup has marked it yet."""
    if session.status == ACTIVE and now >= session.expires_at:
        return EXPIRED
    return session.status


def content_hash(priced: PricedCheckout) -> str:
    """SHA-256 of what the shopper pays for: lines (order-free), prices, payment split, currency.

    Names are left out: renaming an item changes nothing the shopper pays.
    """
    lines = sorted(
        (
            line.item_id,
            line.kind,
            line.quantity,
            line.unit_price,
            line.unit_credits,
            line.units_per_item,
            line.paid_with,
        )
        for line in priced.lines
    )
    canonical = json.dumps({"currency": priced.currency, "lines": lines}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def current_hash(cart: CartFacts, *, use_credits: bool) -> str | None:
    """The content hash the cart would have now, or None when it cannot be priced at all."""
    try:
        priced = price_lines(cart.items, use_credits=use_credits, currency=cart.currency)
    except CartError:  # mixed currencies or a quantity outside the bounds (old rows)
        return None
    return content_hash(priced)


def snapshot_of(priced: PricedCheckout) -> dict[str, Any]:
    return {
        "lines": [line.model_dump(mode="json") for line in priced.lines],
        "totals": asdict(priced.totals),
    }


def priced_from(snapshot: dict[str, Any]) -> PricedCheckout:
    return PricedCheckout(
        lines=tuple(CheckoutLine.model_validate(line) for line in snapshot["lines"]),
        totals=Totals(**snapshot["totals"]),
    )


def _lifecycle_problem(session: SessionFacts, now: datetime) -> CartError | None:
    status = effective_status(session, now)
    if status == EXPIRED:
        return SessionExpired()
    if status == INVALIDATED:
        return SessionInvalidated(session.replaced_by)
    if status == COMPLETED:
        return SessionNotActive()
    return None


def _cart_problem(session: SessionFacts, cart: CartFacts, now: datetime) -> CartError | None:
    try:
        ensure_open(cart.status)
        priced = price_checkout(cart.items, use_credits=session.use_credits, now=now)
    except CartError as exc:
        return exc
    if content_hash(priced) != session.content_hash:
        return CartChanged()
    return None


def checkout_problem(session: SessionFacts, cart: CartFacts, now: datetime) -> CartError | None:
    """Why `session` cannot be checked out now, or None: it is active, unexpired, its cart is
    open with every item on sale, and the cart prices exactly as the session's snapshot."""
    return _lifecycle_problem(session, now) or _cart_problem(session, cart, now)


def recovery_problem(session: SessionFacts, cart: CartFacts, now: datetime) -> CartError | None:
    """Why `session` cannot be recovered, or None: only an expired session whose cart is still
    checkout-able and unchanged comes back (as a new session)."""
    status = effective_status(session, now)
    if status == ACTIVE:
        return SessionNotExpired()
    if status != EXPIRED:
        return _lifecycle_problem(session, now)
    return _cart_problem(session, cart, now)


def reusable(
    session: SessionFacts | None, *, priced: PricedCheckout, use_credits: bool, now: datetime
) -> bool:
    """Whether the cart's active session still stands for this exact request and content."""
    return (
        session is not None
        and effective_status(session, now) == ACTIVE
        and session.use_credits == use_credits
        and session.content_hash == content_hash(priced)
    )
