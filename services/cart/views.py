"""What the cart's HTTP API answers with (items, carts), and the loaders its routes share."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.cart import domain
from services.cart import repository as repo
from services.cart.models import Cart, CatalogueItem
from shared.errors import not_found


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
    db: AsyncSession,
    cart: Cart,
    *,
    use_credits: bool,
    now: datetime,
    session_id: str | None,
) -> dict[str, Any]:
    """Lines and totals as the server prices them; totals count only lines that can be bought.
    `session_id` is the cart's active checkout session, if any."""
    items = await repo.line_items(db, cart.id)
    buyable = [i for i in items if domain.is_available(i, now) and i.currency == cart.currency]
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


async def stored_item(db: AsyncSession, item_id: str) -> CatalogueItem:
    item = await repo.get_item(db, item_id)
    if item is None:
        raise not_found("item")
    return item


async def owned_cart(
    db: AsyncSession, cart_id: str, user_id: str, *, for_update: bool = False
) -> Cart:
    cart = await repo.get_cart(db, cart_id=cart_id, user_id=user_id, for_update=for_update)
    if cart is None:
        raise domain.CartNotFound()
    return cart
