"""Queries of the cart service. Invariants live in the statements (conditional updates,
unique keys), not in read-then-write Python."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Row,
    and_,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.cart.domain import LineItem
from services.cart.models import Cart, CartLine, CatalogueItem, Checkout, CheckoutSession
from shared.db import upsert_insert


def _now() -> datetime:
    return datetime.now(UTC)


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


# --- catalogue -------------------------------------------------------------------------------


def _on_sale(now: datetime) -> ColumnElement[bool]:
    """SQL twin of `domain.is_available`."""
    return and_(
        CatalogueItem.active.is_(True),
        or_(CatalogueItem.available_from.is_(None), CatalogueItem.available_from <= now),
        or_(CatalogueItem.available_until.is_(None), CatalogueItem.available_until > now),
    )


async def items_on_sale(session: AsyncSession, now: datetime) -> Sequence[CatalogueItem]:
    query = select(CatalogueItem).where(_on_sale(now)).order_by(CatalogueItem.id)
    return (await session.scalars(query)).all()


async def get_item(session: AsyncSession, item_id: str) -> CatalogueItem | None:
    return await session.get(CatalogueItem, item_id)


async def upsert_item(session: AsyncSession, *, item_id: str, values: dict[str, Any]) -> None:
    insert = upsert_insert(session)
    now = _now()
    stmt = insert(CatalogueItem).values(id=item_id, created_at=now, updated_at=now, **values)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=["id"], set_={**values, "updated_at": now})
    )


async def insert_items_if_missing(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Seeds rows; a replica starting at the same moment makes this a no-op, not a failure."""
    insert = upsert_insert(session)
    now = _now()
    for row in rows:
        stmt = insert(CatalogueItem).values(**row, created_at=now, updated_at=now)
        await session.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))


async def deactivate_item(session: AsyncSession, item_id: str) -> bool:
    result = await session.execute(
        update(CatalogueItem)
        .where(CatalogueItem.id == item_id)
        .values(active=False, updated_at=_now())
    )
    return _rowcount(result) == 1


async def count_items(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(CatalogueItem)) or 0)


async def orphan_line_item_ids(session: AsyncSession) -> list[str]:
    """Item ids of cart lines whose catalogue item does not exist."""
    query = (
        select(CartLine.item_id)
        .outerjoin(CatalogueItem, CatalogueItem.id == CartLine.item_id)
        .where(CatalogueItem.id.is_(None))
        .distinct()
    )
    return list((await session.scalars(query)).all())


# --- carts -----------------------------------------------------------------------------------


async def create_cart(session: AsyncSession, *, cart_id: str, user_id: str, currency: str) -> Cart:
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
    session.add(cart)
    await session.flush()
    return cart


async def get_cart(
    session: AsyncSession, *, cart_id: str, user_id: str, for_update: bool = False
) -> Cart | None:
    """`for_update` row-locks the cart on PostgreSQL (SQLite's BEGIN IMMEDIATE already
    serialises writers): session issuing, line changes and checkout of one cart queue up."""
    query = select(Cart).where(Cart.id == cart_id, Cart.user_id == user_id)
    if for_update:
        query = query.with_for_update()
    return (await session.scalars(query)).one_or_none()


async def line_items(session: AsyncSession, cart_id: str) -> list[LineItem]:
    """The cart's lines joined with their catalogue items, in the order they were added.

    Columns rather than `CatalogueItem` objects: nothing here is written back, and loading
    entities into the session costs more than the rows themselves."""
    query = (
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
        .where(CartLine.cart_id == cart_id)
        .order_by(CartLine.id)
    )
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
        for row in (await session.execute(query)).all()
    ]


async def touch_open_cart(session: AsyncSession, cart_id: str) -> bool:
    """Bumps the version of an open cart; False when it is not open.

    Taken before changing a line: it row-locks the cart on PostgreSQL, so a line change and a
    checkout of the same cart serialise, and the checkout sees the new version.
    """
    result = await session.execute(
        update(Cart)
        .where(Cart.id == cart_id, Cart.status == "open")
        .values(version=Cart.version + 1, updated_at=_now())
    )
    return _rowcount(result) == 1


async def set_line(session: AsyncSession, *, cart_id: str, item_id: str, quantity: int) -> None:
    insert = upsert_insert(session)
    stmt = insert(CartLine).values(cart_id=cart_id, item_id=item_id, quantity=quantity)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["cart_id", "item_id"], set_={"quantity": quantity}
        )
    )


async def remove_line(session: AsyncSession, *, cart_id: str, item_id: str) -> None:
    await session.execute(
        delete(CartLine).where(CartLine.cart_id == cart_id, CartLine.item_id == item_id)
    )


async def start_cart_checkout(session: AsyncSession, *, cart_id: str, version: int) -> bool:
    """open -> checking_out, only if nobody changed the cart since it was priced."""
    result = await session.execute(
        update(Cart)
        .where(Cart.id == cart_id, Cart.status == "open", Cart.version == version)
        .values(status="checking_out", version=version + 1, updated_at=_now())
    )
    return _rowcount(result) == 1


async def move_cart(session: AsyncSession, *, cart_id: str, from_status: str, to: str) -> bool:
    result = await session.execute(
        update(Cart)
        .where(Cart.id == cart_id, Cart.status == from_status)
        .values(status=to, version=Cart.version + 1, updated_at=_now())
    )
    return _rowcount(result) == 1


# --- checkouts -------------------------------------------------------------------------------


async def add_checkout(
    session: AsyncSession,
    *,
    checkout_id: str,
    cart_id: str,
    user_id: str,
    key: str,
    request_hash: str,
    response: str,
) -> None:
    """A `requested` checkout; raises IntegrityError when (user, idempotency key) exists."""
    await session.execute(
        insert(Checkout).values(
            id=checkout_id,
            cart_id=cart_id,
            user_id=user_id,
            idempotency_key=key,
            request_hash=request_hash,
            status="requested",
            response=response,
        )
    )


async def checkout_by_key(
    session: AsyncSession, *, user_id: str, key: str
) -> Row[str, str, str] | None:
    """(id, request_hash, response) of the user's checkout with this idempotency key."""
    query = select(Checkout.id, Checkout.request_hash, Checkout.response).where(
        Checkout.user_id == user_id, Checkout.idempotency_key == key
    )
    return (await session.execute(query)).one_or_none()


async def get_checkout(session: AsyncSession, *, checkout_id: str, user_id: str) -> Checkout | None:
    query = select(Checkout).where(Checkout.id == checkout_id, Checkout.user_id == user_id)
    return (await session.scalars(query)).one_or_none()


async def finish_checkout(
    session: AsyncSession, *, checkout_id: str, status: str, reason: str | None = None
) -> str | None:
    """requested -> `status`; returns the cart id, or None when it was already finished."""
    return await session.scalar(
        update(Checkout)
        .where(Checkout.id == checkout_id, Checkout.status == "requested")
        .values(status=status, reason=reason, updated_at=_now())
        .returning(Checkout.cart_id)
    )


# --- checkout sessions -----------------------------------------------------------------------


async def add_session(session: AsyncSession, row: CheckoutSession) -> None:
    """Stores a new session as it is; `row` stays out of the ORM session (nothing writes it
    back). Raises IntegrityError when it is active and the cart has an active session already
    (partial unique index)."""
    await session.execute(
        insert(CheckoutSession).values(
            id=row.id,
            cart_id=row.cart_id,
            user_id=row.user_id,
            status=row.status,
            use_credits=row.use_credits,
            snapshot=row.snapshot,
            content_hash=row.content_hash,
            expires_at=row.expires_at,
            checkout_id=row.checkout_id,
            replaced_by=row.replaced_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
    )


async def get_session(
    session: AsyncSession, *, session_id: str, user_id: str
) -> CheckoutSession | None:
    query = select(CheckoutSession).where(
        CheckoutSession.id == session_id, CheckoutSession.user_id == user_id
    )
    return (await session.scalars(query)).one_or_none()


async def active_session(session: AsyncSession, cart_id: str) -> CheckoutSession | None:
    """The cart's session in status `active` (which may be past its expiry, not yet marked)."""
    query = select(CheckoutSession).where(
        CheckoutSession.cart_id == cart_id, CheckoutSession.status == "active"
    )
    return (await session.scalars(query)).one_or_none()


async def retire_active_session(
    session: AsyncSession, *, cart_id: str, replaced_by: str | None, now: datetime
) -> None:
    """Ends the cart's active session: `expired` if its time is up, else `invalidated` (pointing
    at its successor). One statement, conditional on the row still being active: a concurrent
    cleanup that expired it first leaves nothing to retire."""
    time_is_up = CheckoutSession.expires_at <= now
    await session.execute(
        update(CheckoutSession)
        .where(CheckoutSession.cart_id == cart_id, CheckoutSession.status == "active")
        .values(
            status=case((time_is_up, "expired"), else_="invalidated"),
            replaced_by=case((time_is_up, CheckoutSession.replaced_by), else_=replaced_by),
            updated_at=now,
        )
    )


async def complete_session(
    session: AsyncSession, *, session_id: str, checkout_id: str, now: datetime
) -> bool:
    """active -> completed, once: only an unexpired active session, only one checkout."""
    result = await session.execute(
        update(CheckoutSession)
        .where(
            CheckoutSession.id == session_id,
            CheckoutSession.status == "active",
            CheckoutSession.expires_at > now,
        )
        .values(status="completed", checkout_id=checkout_id, updated_at=now)
    )
    return _rowcount(result) == 1


async def mark_recovered(
    session: AsyncSession, *, session_id: str, replaced_by: str, now: datetime
) -> None:
    """An expired session points at the session that recovered it."""
    await session.execute(
        update(CheckoutSession)
        .where(
            CheckoutSession.id == session_id,
            CheckoutSession.status.in_(("active", "expired")),
            CheckoutSession.expires_at <= now,
        )
        .values(status="expired", replaced_by=replaced_by, updated_at=now)
    )


async def expire_sessions(session: AsyncSession, now: datetime) -> int:
    result = await session.execute(
        update(CheckoutSession)
        .where(CheckoutSession.status == "active", CheckoutSession.expires_at <= now)
        .values(status="expired", updated_at=now)
    )
    return _rowcount(result)


async def delete_ended_sessions(session: AsyncSession, *, ended_before: datetime) -> int:
    """Deletes expired and invalidated sessions that ended before the given time; completed
    sessions stay, as the record of what each checkout was priced from."""
    result = await session.execute(
        delete(CheckoutSession).where(
            CheckoutSession.status.in_(("expired", "invalidated")),
            CheckoutSession.updated_at < ended_before,
        )
    )
    return _rowcount(result)
