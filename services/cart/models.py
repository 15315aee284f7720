"""Tables of the cart service's own database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import NAMING_CONVENTION, BigIntPk, UtcDateTime
from shared.inbox import inbox_table
from shared.limits import MAX_QUANTITY, MIN_QUANTITY
from shared.outbox import outbox_table


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


ITEM_KINDS = ("credit_pack", "session_package", "server_plan", "service_job")
CART_STATUSES = ("open", "checking_out", "checked_out")
CHECKOUT_STATUSES = ("requested", "completed", "partially_completed", "cancelled")
SESSION_STATUSES = ("active", "completed", "expired", "invalidated")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class CatalogueItem(Base):
    __tablename__ = "catalogue_items"
    __table_args__ = (
        CheckConstraint(_one_of("kind", ITEM_KINDS), name="kind"),
        CheckConstraint("unit_price >= 0", name="unit_price_not_negative"),
        CheckConstraint("credit_price IS NULL OR credit_price >= 0", name="credit_price_valid"),
        CheckConstraint("units_per_item >= 0", name="units_not_negative"),
        CheckConstraint("length(currency) = 3", name="currency_code"),
        # Added by a later revision as a column-level CHECK on SQLite (no table rebuild there).
        CheckConstraint(
            "available_until IS NULL OR available_from IS NULL OR available_until > available_from",
            name="availability_window",
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    unit_price: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # NULL: the item can only be paid with money.
    credit_price: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    units_per_item: Mapped[int] = mapped_column(BigInteger, default=1)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Sold from / until these instants (NULL: no bound); `active` is the operator's hard switch.
    available_from: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    available_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Cart(Base):
    __tablename__ = "carts"
    __table_args__ = (CheckConstraint(_one_of("status", CART_STATUSES), name="status"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    currency: Mapped[str] = mapped_column(String(3))
    # Bumped by every change; checkout's conditional update on it makes a cart check out once.
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CartLine(Base):
    __tablename__ = "cart_lines"
    __table_args__ = (
        UniqueConstraint("cart_id", "item_id", name="uq_cart_lines_cart_item"),
        CheckConstraint(
            f"quantity BETWEEN {MIN_QUANTITY} AND {MAX_QUANTITY}", name="quantity_range"
        ),
    )

    # Surrogate key only to keep lines in the order the shopper added them.
    id: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    cart_id: Mapped[str] = mapped_column(ForeignKey("carts.id", ondelete="CASCADE"))
    # RESTRICT: a catalogue item referenced by a cart is deactivated, never deleted.
    item_id: Mapped[str] = mapped_column(
        ForeignKey("catalogue_items.id", ondelete="RESTRICT"), index=True
    )
    quantity: Mapped[int] = mapped_column(Integer)


class Checkout(Base):
    __tablename__ = "checkouts"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_checkouts_user_key"),
        CheckConstraint(_one_of("status", CHECKOUT_STATUSES), name="status"),
        Index("ix_checkouts_cart_id", "cart_id"),
        # The outcome-inquiry round's scan: only checkouts in flight, oldest first; the table
        # keeps every checkout ever made.
        Index(
            "ix_checkouts_requested_updated_at",
            "updated_at",
            postgresql_where=text("status = 'requested'"),
            sqlite_where=text("status = 'requested'"),
        ),
    )

    # Also the order id and the saga's correlation id.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cart_id: Mapped[str] = mapped_column(ForeignKey("carts.id"))
    user_id: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(24), default="requested")
    # The exact 202 body, so a retried request gets the same answer.
    response: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # While `requested`: when the cart last acted on it (made it, or asked orders after it, see
    # `recovery.py`); then when it finished.
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CheckoutSession(Base):
    """A priced snapshot of a cart the shopper is about to pay for; checked out at most once."""

    __tablename__ = "checkout_sessions"
    __table_args__ = (
        CheckConstraint(_one_of("status", SESSION_STATUSES), name="status"),
        CheckConstraint("expires_at > created_at", name="expires_after_creation"),
        # A completed session names its checkout, and only a completed one does.
        CheckConstraint(
            "(status = 'completed' AND checkout_id IS NOT NULL)"
            " OR (status <> 'completed' AND checkout_id IS NULL)",
            name="checkout_iff_completed",
        ),
        CheckConstraint("length(content_hash) = 64", name="content_hash_sha256"),
        # At most one active session per cart: two tabs opening checkout cannot both get one.
        Index(
            "uq_checkout_sessions_one_active_per_cart",
            "cart_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
        Index("ix_checkout_sessions_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cart_id: Mapped[str] = mapped_column(ForeignKey("carts.id"))
    user_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active")
    use_credits: Mapped[bool] = mapped_column(Boolean)
    # {"lines": [CheckoutLine...], "totals": Totals}: exactly what CheckoutRequested will carry.
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)
    # SHA-256 of the priced cart content; the cart "still matches" while it prices the same.
    content_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # One session per checkout (unique), set by the conditional active -> completed update.
    checkout_id: Mapped[str | None] = mapped_column(
        ForeignKey("checkouts.id"), unique=True, nullable=True
    )
    # The session issued when a cart change (or recovery) replaced this one; not a foreign key,
    # so that cleanup can delete sessions in any order.
    replaced_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
