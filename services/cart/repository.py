"""Queries of the cart service. Invariants live in the statements (conditional updates,
unique keys), not in read-then-write Python."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Row,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.cart.domain import LineItem
from services.cart.models import Cart, CartLine, CatalogueItem, Checkout
from shared.db import rowcount, upsert_insert


def _now() -> datetime:
    return datetime.now(UTC)


# The checkout path and the order outcomes run their statements prebuilt, with bound parameters:
# building a statement and its cache key costs about as much CPU as running it. Writes there go
# through the Core tables (no ORM bookkeeping: nothing loaded is read again after them). The
# checkout-session statements (`checkout_sessions.store`) are built the same way.
_carts = cast(Table, Cart.__table__)
_checkouts = cast(Table, Checkout.__table__)


# --- catalogue -------------------------------------------------------------------------------


def _on_sale(now: datetime) -> ColumnElement[bool]:
    """SQL twin of `domain.is_available`."""
    return and_(
        CatalogueItem.active.is_(True),
        or_(CatalogueItem.available_from.is_(None), CatalogueItem.available_from <= now),
        or_(CatalogueItem.available_until.is_(None), CatalogueItem.available_until > now),
    )


async def items_on_sale(db: AsyncSession, now: datetime) -> Sequence[CatalogueItem]:
    query = select(CatalogueItem).where(_on_sale(now)).order_by(CatalogueItem.id)
    return (await db.scalars(query)).all()


async def get_item(db: AsyncSession, item_id: str) -> CatalogueItem | None:
    return await db.get(CatalogueItem, item_id)


async def upsert_item(db: AsyncSession, *, item_id: str, values: dict[str, Any]) -> None:
    insert = upsert_insert(db)
    now = _now()
    stmt = insert(CatalogueItem).values(id=item_id, created_at=now, updated_at=now, **values)
    await db.execute(
        stmt.on_conflict_do_update(index_elements=["id"], set_={**values, "updated_at": now})
    )


async def insert_items_if_missing(db: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Seeds rows; a replica starting at the same moment makes this a no-op, not a failure."""
    insert = upsert_insert(db)
    now = _now()
    for row in rows:
        stmt = insert(CatalogueItem).values(**row, created_at=now, updated_at=now)
        await db.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))


async def deactivate_item(db: AsyncSession, item_id: str) -> bool:
    result = await db.execute(
        update(CatalogueItem)
        .where(CatalogueItem.id == item_id)
        .values(active=False, updated_at=_now())
    )
    return rowcount(result) == 1


async def count_items(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(CatalogueItem)) or 0)


async def orphan_line_item_ids(db: AsyncSession) -> list[str]:
    """Item ids of cart lines whose catalogue item does not exist."""
    query = (
        select(CartLine.item_id)
        .outerjoin(CatalogueItem, CatalogueItem.id == CartLine.item_id)
        .where(CatalogueItem.id.is_(None))
        .distinct()
    )
    return list((await db.scalars(query)).all())


# --- carts -----------------------------------------------------------------------------------


async def create_cart(db: AsyncSession, *, cart_id: str, user_id: str, currency: str) -> Cart:
    now = _now()
    cart = Cart(
        id=cart_id,
        user_id=user_id,
        status="open",
        currency=currency,
        version=1,
        created_at=now,
        updated_at=now,
    )
    db.add(cart)
    await db.flush()
    return cart


async def get_cart(
    db: AsyncSession, *, cart_id: str, user_id: str, for_update: bool = False
) -> Cart | None:
    """`for_update` row-locks the cart on PostgreSQL (SQLite's BEGIN IMMEDIATE already
    serialises writers): session issuing, line changes and checkout of one cart queue up."""
    query = _CART_FOR_UPDATE if for_update else _CART
    return (await db.scalars(query, {"cart_id": cart_id, "user_id": user_id})).one_or_none()


_CART = select(Cart).where(Cart.id == bindparam("cart_id"), Cart.user_id == bindparam("user_id"))
_CART_FOR_UPDATE = _CART.with_for_update()


async def line_items(db: AsyncSession, cart_id: str) -> list[LineItem]:
    """The cart's lines joined with their catalogue items, in the order they were added.

    Columns rather than `CatalogueItem` objects: nothing here is written back, and loading
    entities into the ORM session costs more than the rows themselves."""
    return [
        LineItem(
            item_id=row.id,
            kind=row.kind,  # the CHECK constraint guarantees the kind
            name=row.name,
            quantity=row.quantity,
            unit_price=row.unit_price,
            currency=row.currency,
            credit_price=row.credit_price,
            units_per_item=row.units_per_item,
            active=row.active,
            available_from=row.available_from,
            available_until=row.available_until,
        )
        for row in (await db.execute(_LINE_ITEMS, {"cart_id": cart_id})).all()
    ]


_LINE_ITEMS = (
    select(
        CatalogueItem.id,
        CatalogueItem.kind,
        CatalogueItem.name,
        CartLine.quantity,
        CatalogueItem.unit_price,
        CatalogueItem.currency,
        CatalogueItem.credit_price,
        CatalogueItem.units_per_item,
        CatalogueItem.active,
        CatalogueItem.available_from,
        CatalogueItem.available_until,
    )
    .join(CatalogueItem, CatalogueItem.id == CartLine.item_id)
    .where(CartLine.cart_id == bindparam("cart_id"))
    .order_by(CartLine.id)
)


async def touch_open_cart(db: AsyncSession, cart_id: str) -> bool:
    """Bumps the version of an open cart; False when it is not open.

    Taken before changing a line: it row-locks the cart on PostgreSQL, so a line change and a
    checkout of the same cart serialise, and the checkout sees the new version.
    """
    result = await db.execute(
        update(Cart)
        .where(Cart.id == cart_id, Cart.status == "open")
        .values(version=Cart.version + 1, updated_at=_now())
    )
    return rowcount(result) == 1


async def set_line(db: AsyncSession, *, cart_id: str, item_id: str, quantity: int) -> None:
    insert = upsert_insert(db)
    stmt = insert(CartLine).values(cart_id=cart_id, item_id=item_id, quantity=quantity)
    await db.execute(
        stmt.on_conflict_do_update(
            index_elements=["cart_id", "item_id"], set_={"quantity": quantity}
        )
    )


async def remove_line(db: AsyncSession, *, cart_id: str, item_id: str) -> None:
    await db.execute(
        delete(CartLine).where(CartLine.cart_id == cart_id, CartLine.item_id == item_id)
    )


async def start_cart_checkout(db: AsyncSession, *, cart_id: str, version: int) -> bool:
    """open -> checking_out, only if nobody changed the cart since it was priced. A `Cart`
    loaded by this `db` keeps its old status and version."""
    params = {"cart_id": cart_id, "version": version, "next_version": version + 1, "now": _now()}
    return rowcount(await db.execute(_START_CART_CHECKOUT, params)) == 1


_START_CART_CHECKOUT = (
    update(_carts)
    .where(
        _carts.c.id == bindparam("cart_id"),
        _carts.c.status == "open",
        _carts.c.version == bindparam("version"),
    )
    .values(status="checking_out", version=bindparam("next_version"), updated_at=bindparam("now"))
)


async def move_cart(db: AsyncSession, *, cart_id: str, from_status: str, to: str) -> bool:
    params = {"cart_id": cart_id, "from_status": from_status, "to": to, "now": _now()}
    return rowcount(await db.execute(_MOVE_CART, params)) == 1


_MOVE_CART = (
    update(_carts)
    .where(_carts.c.id == bindparam("cart_id"), _carts.c.status == bindparam("from_status"))
    .values(status=bindparam("to"), version=_carts.c.version + 1, updated_at=bindparam("now"))
)


# --- checkouts -------------------------------------------------------------------------------


async def add_checkout(
    db: AsyncSession,
    *,
    checkout_id: str,
    cart_id: str,
    user_id: str,
    key: str,
    request_hash: str,
    response: str,
) -> None:
    """A `requested` checkout; raises IntegrityError when (user, idempotency key) exists."""
    now = _now()
    await db.execute(
        _ADD_CHECKOUT,
        {
            "id": checkout_id,
            "cart_id": cart_id,
            "user_id": user_id,
            "idempotency_key": key,
            "request_hash": request_hash,
            "status": "requested",
            "response": response,
            "created_at": now,
            "updated_at": now,
        },
    )


_ADD_CHECKOUT = insert(_checkouts)


async def checkout_by_key(db: AsyncSession, *, user_id: str, key: str) -> Row[str, str, str] | None:
    """(id, request_hash, response) of the user's checkout with this idempotency key."""
    params = {"user_id": user_id, "key": key}
    return (await db.execute(_CHECKOUT_BY_KEY, params)).one_or_none()


_CHECKOUT_BY_KEY = select(_checkouts.c.id, _checkouts.c.request_hash, _checkouts.c.response).where(
    _checkouts.c.user_id == bindparam("user_id"), _checkouts.c.idempotency_key == bindparam("key")
)


async def get_checkout(db: AsyncSession, *, checkout_id: str, user_id: str) -> Checkout | None:
    query = select(Checkout).where(Checkout.id == checkout_id, Checkout.user_id == user_id)
    return (await db.scalars(query)).one_or_none()


async def finish_checkout(
    db: AsyncSession, *, checkout_id: str, status: str, reason: str | None = None
) -> str | None:
    """requested -> `status`; returns the cart id, or None when it was already finished."""
    params = {"checkout_id": checkout_id, "status": status, "reason": reason, "now": _now()}
    return await db.scalar(_FINISH_CHECKOUT, params)


_FINISH_CHECKOUT = (
    update(_checkouts)
    .where(_checkouts.c.id == bindparam("checkout_id"), _checkouts.c.status == "requested")
    .values(status=bindparam("status"), reason=bindparam("reason"), updated_at=bindparam("now"))
    .returning(_checkouts.c.cart_id)
)


async def claim_silent_checkouts(
    db: AsyncSession, *, silent_since: datetime, now: datetime, batch: int
) -> Sequence[Row[str, str]]:
    """(id, cart_id), in no order, of the oldest `batch` checkouts still `requested` and
    untouched since `silent_since`, each touched to `now` so that claims skip it until it has
    been silent that long again. SKIP LOCKED on PostgreSQL: replicas claiming at once take
    different rows (SQLite's single writer needs none)."""
    params = {"silent_since": silent_since, "now": now, "batch": batch}
    return (await db.execute(_CLAIM_SILENT_CHECKOUTS, params)).all()


_SILENT_CHECKOUTS = (
    select(_checkouts.c.id)
    .where(_checkouts.c.status == "requested", _checkouts.c.updated_at <= bindparam("silent_since"))
    .order_by(_checkouts.c.updated_at)
    .limit(bindparam("batch"))
    .with_for_update(skip_locked=True)
)
_CLAIM_SILENT_CHECKOUTS = (
    update(_checkouts)
    .where(_checkouts.c.id.in_(_SILENT_CHECKOUTS.scalar_subquery()))
    .values(updated_at=bindparam("now"))
    .returning(_checkouts.c.id, _checkouts.c.cart_id)
)
