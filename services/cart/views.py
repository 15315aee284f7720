"""What the cart's HTTP API answers with, and how its domain errors reach a client."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.cart import domain, sessions
from services.cart import repository as repo
from services.cart import session_domain as rules
from services.cart.models import Cart, CatalogueItem, CheckoutSession
from shared.errors import ApiError, not_found

STATUS_OF: dict[type[domain.CartError], int] = {
    domain.EmptyCart: 422,
    domain.ItemUnavailable: 422,
    domain.QuantityOutOfRange: 422,
    domain.MixedCurrencies: 422,
    domain.CartNotOpen: 409,
    rules.SessionExpired: 409,
    rules.SessionInvalidated: 409,
    rules.SessionNotActive: 409,
    rules.SessionNotExpired: 409,
    rules.CartChanged: 409,
    rules.UseCreditsConflict: 422,
}


def error_details(exc: domain.CartError) -> dict[str, Any] | None:
    if isinstance(exc, domain.ItemUnavailable):
        return {"item_id": exc.item_id}
    if isinstance(exc, rules.SessionInvalidated):
        return {"replaced_by": exc.replaced_by}
    return None


def api_error(exc: domain.CartError, *, status_code: int | None = None) -> ApiError:
    status = status_code or STATUS_OF.get(type(exc), 422)
    return ApiError(status, exc.code, str(exc), details=error_details(exc))


@contextlib.contextmanager
def domain_errors(*, status_code: int | None = None) -> Iterator[None]:
    """Turns domain errors into client errors carrying the domain's code."""
    try:
        yield
    except domain.CartError as exc:
        raise api_error(exc, status_code=status_code) from None


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def item_view(item: CatalogueItem, *, now: datetime) -> dict[str, Any]:
    return {
        "id": item.id,
        "kind": item.kind,
        "name": item.name,
        "unit_price": item.unit_price,
        "currency": item.currency,
        "credit_price": item.credit_price,
        "units_per_item": item.units_per_item,
        "active": item.active,
        "available_from": iso(item.available_from),
        "available_until": iso(item.available_until),
        "available": domain.is_available(item, now),
    }


async def cart_view(
    session: AsyncSession,
    cart: Cart,
    *,
    use_credits: bool,
    now: datetime,
    session_id: str | None,
) -> dict[str, Any]:
    """Lines and totals as the server prices them; totals count only lines that can be bought.
    `session_id` is the cart's active checkout session, if any."""
    items = await repo.line_items(session, cart.id)
    buyable = [i for i in items if domain.is_available(i, now) and i.currency == cart.currency]
    with domain_errors():
        priced = domain.price_lines(buyable, use_credits=use_credits, currency=cart.currency)
    paid_with = {line.item_id: line.paid_with for line in priced.lines}
    lines = [
        {
            "item_id": i.item_id,
            "name": i.name,
            "kind": i.kind,
            "quantity": i.quantity,
            "unit_price": i.unit_price,
            "credit_price": i.credit_price,
            "units_per_item": i.units_per_item,
            "units": i.units_per_item * i.quantity,
            "available": i.item_id in paid_with,
            "paid_with": paid_with.get(i.item_id),
        }
        for i in items
    ]
    return {
        "cart_id": cart.id,
        "status": cart.status,
        "currency": cart.currency,
        "lines": lines,
        "totals": asdict(priced.totals),
        "session_id": session_id,
    }


def session_view(
    row: CheckoutSession,
    *,
    now: datetime,
    problem: domain.CartError | None,
    cart_matches: bool,
) -> dict[str, Any]:
    """A session as validated now: `valid` with `code` null, or the code a checkout would get."""
    return {
        "session_id": row.id,
        "cart_id": row.cart_id,
        "status": rules.effective_status(sessions.facts(row), now),
        "valid": problem is None,
        "code": problem.code if problem is not None else None,
        "message": str(problem) if problem is not None else None,
        "cart_matches": cart_matches,
        "use_credits": row.use_credits,
        "lines": row.snapshot["lines"],
        "totals": row.snapshot["totals"],
        "expires_at": iso(row.expires_at),
        "created_at": iso(row.created_at),
        "checkout_id": row.checkout_id,
        "replaced_by": row.replaced_by,
    }


async def stored_item(session: AsyncSession, item_id: str) -> CatalogueItem:
    item = await repo.get_item(session, item_id)
    if item is None:
        raise not_found("item")
    return item


async def owned_cart(
    session: AsyncSession, cart_id: str, user_id: str, *, for_update: bool = False
) -> Cart:
    cart = await repo.get_cart(session, cart_id=cart_id, user_id=user_id, for_update=for_update)
    if cart is None:
        raise not_found("cart")
    return cart


async def owned_session(session: AsyncSession, session_id: str, user_id: str) -> CheckoutSession:
    row = await repo.get_session(session, session_id=session_id, user_id=user_id)
    if row is None:
        raise not_found("session")
    return row
