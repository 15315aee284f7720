"""Tables of the payments service's own database: credit ledger, Stripe sessions, refunds,
disputes and events."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.payments.domain import (
    ENTRY_KINDS,
    REFUND_STATUSES,
    RESERVATION_STATUSES,
    SESSION_STATUSES,
)
from shared.db import NAMING_CONVENTION, BigIntPk, UtcDateTime
from shared.inbox import inbox_table
from shared.outbox import outbox_table


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class CreditAccount(Base):
    """Cached balance of one user; the CHECKs are what make overspending impossible."""

    __tablename__ = "credit_accounts"
    __table_args__ = (
        CheckConstraint("available >= 0", name="available_not_negative"),
        CheckConstraint("reserved >= 0", name="reserved_not_negative"),
    )

    user_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    available: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint(_one_of("kind", ENTRY_KINDS), name="kind"),
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_ledger_entries_user_id_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(10))
    amount: Mapped[int] = mapped_column(BigInteger)
    debit_account: Mapped[str] = mapped_column(String(120))
    credit_account: Mapped[str] = mapped_column(String(120))
    order_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # The idempotency key of the effect: a second posting of the same thing cannot insert.
    reference: Mapped[str] = mapped_column(String(200), unique=True)
    trace_id: Mapped[str] = mapped_column(String(64))
    # Why credits were added (grant reason, who granted); audit only, never interpreted.
    memo: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CreditReservation(Base):
    __tablename__ = "credit_reservations"
    __table_args__ = (
        CheckConstraint(_one_of("status", RESERVATION_STATUSES), name="status"),
        # 0 only for the tombstone a release leaves when no reservation existed yet.
        CheckConstraint("credits >= 0", name="credits_not_negative"),
        CheckConstraint("captured >= 0 AND captured <= credits", name="captured_within_credits"),
        # Refunds of an order's credits never add up to more than it spent.
        CheckConstraint("refunded >= 0 AND refunded <= captured", name="refunded_within_captured"),
    )

    order_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(100), index=True)
    credits: Mapped[int] = mapped_column(BigInteger)
    captured: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(10))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PaymentSession(Base):
    """One Stripe Checkout Session per order (order id == checkout id == trace id)."""

    __tablename__ = "payment_sessions"
    __table_args__ = (
        CheckConstraint(_one_of("status", SESSION_STATUSES), name="status"),
        CheckConstraint("amount_total >= 0", name="amount_total_not_negative"),
        # Refunds accepted by Stripe (pending or succeeded) never add up to more than was paid.
        CheckConstraint(
            "amount_refunded >= 0 AND amount_refunded <= amount_total",
            name="refunded_within_total",
        ),
        Index("ix_payment_sessions_status_created_at", "status", "created_at"),
    )

    order_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(255), unique=True)
    # Indexed: refunds and disputes Stripe reports find their order by the payment intent.
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(10))
    amount_total: Mapped[int] = mapped_column(BigInteger)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    url: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    trace_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # When the reconciler last asked Stripe about it: the least recently checked go first.
    reconciled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Refund(Base):
    """A money refund of one order, made once per (order, refund key) through Stripe."""

    __tablename__ = "refunds"
    __table_args__ = (
        PrimaryKeyConstraint("order_id", "refund_key"),
        CheckConstraint(_one_of("status", REFUND_STATUSES), name="status"),
        CheckConstraint("amount > 0", name="amount_positive"),
        # The reconciler's look-up: the few refunds still pending among all ever made.
        Index(
            "ix_refunds_pending",
            "created_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    # The saga's refund keys ("late-payment", "failed-lines-2") repeat across orders.
    order_id: Mapped[str] = mapped_column(String(36))
    refund_key: Mapped[str] = mapped_column(String(200))
    # NULL for a refund Stripe refused (`rejected`): there is no refund at Stripe.
    stripe_refund_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(10))
    # Why the saga refunds (ours, sent to Stripe as metadata).
    reason: Mapped[str] = mapped_column(Text)
    # Why it did not reach the shopper (failed, canceled, rejected): what RefundFailed says.
    failure_reason: Mapped[str | None] = mapped_column(Text)
    trace_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # When the reconciler last took it to ask Stripe: a pending refund is asked about once per
    # refund_reconcile_after_seconds, by one replica.
    reconciled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Dispute(Base):
    """A cardholder's dispute of one of our payments, as Stripe's newest event about it shows
    it (domain.dispute_supersedes): one row per Stripe dispute."""

    __tablename__ = "disputes"
    __table_args__ = (
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        # The operator's list: by status, newest first.
        Index("ix_disputes_status_created_at", "status", "created_at"),
    )

    dispute_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(36), index=True)
    payment_intent_id: Mapped[str] = mapped_column(String(255))
    charge_id: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(50))
    # Stripe's status (domain.DISPUTE_STATUSES; no CHECK, as Stripe adds statuses).
    status: Mapped[str] = mapped_column(String(30))
    # When the cardholder opened it (the dispute's `created` at Stripe).
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The `created` of the Stripe event the row's status comes from: only a newer one moves it.
    status_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class StripeEvent(Base):
    """Every verified webhook event; processed_at NULL means its effect is still to be applied.
    An event about no payment of ours is processed at once and marked ignored, with why."""

    __tablename__ = "stripe_events"
    __table_args__ = (
        Index(
            "ix_stripe_events_unprocessed",
            "received_at",
            postgresql_where=text("processed_at IS NULL"),
            sqlite_where=text("processed_at IS NULL"),
        ),
    )

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    # The event's data.object id (checkout session, refund, charge): finds what waits for a row.
    object_id: Mapped[str | None] = mapped_column(String(255), index=True)
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ignored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ignored_reason: Mapped[str | None] = mapped_column(Text)
