"""Tables of the provisioning service's own database."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import NAMING_CONVENTION, UtcDateTime
from shared.inbox import inbox_table
from shared.outbox import outbox_table

JOB_STATUSES = ("created", "scheduled", "done", "partially_done", "cancelled", "failed")
ITEM_STATUSES = ("pending", "delivered", "partially_delivered", "scheduled", "failed")
UNIT_STATUSES = ("delivered", "failed")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    """The fulfilment (dispatch) job of one order: who receives what, and by when."""

    __tablename__ = "jobs"
    __table_args__ = (CheckConstraint(_one_of("status", JOB_STATUSES), name="status"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(20))
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    cancel_reason: Mapped[str | None] = mapped_column(Text)

    items: Mapped[list[JobItem]] = relationship(
        back_populates="job", order_by="JobItem.line_no", lazy="raise"
    )


class JobItem(Base):
    """One order line to deliver, with the outcome of its provisioner."""

    __tablename__ = "job_items"
    __table_args__ = (
        CheckConstraint(_one_of("status", ITEM_STATUSES), name="status"),
        CheckConstraint("quantity >= 1", name="quantity_positive"),
        CheckConstraint("units_per_item >= 0", name="units_not_negative"),
        CheckConstraint("units_failed BETWEEN 0 AND quantity", name="units_failed_in_quantity"),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    units_per_item: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(Text, default="")
    external_ref: Mapped[str | None] = mapped_column(String(200))
    # How many of `quantity` units were not delivered (the saga refunds exactly those).
    units_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    job: Mapped[Job] = relationship(back_populates="items", lazy="raise")
    units: Mapped[list[JobUnit]] = relationship(
        back_populates="item", order_by="JobUnit.unit_no", lazy="raise"
    )


class JobUnit(Base):
    """One unit of a line that is built one by one (a server of a server plan): its outcome
    and what the panel made of it, under its own idempotency key."""

    __tablename__ = "job_units"
    __table_args__ = (
        ForeignKeyConstraint(
            ["job_id", "line_no"],
            ["job_items.job_id", "job_items.line_no"],
            ondelete="CASCADE",
        ),
        CheckConstraint(_one_of("status", UNIT_STATUSES), name="status"),
        CheckConstraint("unit_no >= 1", name="unit_no_positive"),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(Text, default="")
    external_ref: Mapped[str | None] = mapped_column(String(200))

    item: Mapped[JobItem] = relationship(back_populates="units", lazy="raise")


class Entitlement(Base):
    """Sessions a user may book, granted by a delivered session package line."""

    __tablename__ = "entitlements"
    __table_args__ = (
        UniqueConstraint("order_id", "line_no", name="uq_entitlements_order_line"),
        CheckConstraint("sessions > 0", name="sessions_positive"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    order_id: Mapped[str] = mapped_column(String(64))
    line_no: Mapped[int] = mapped_column(Integer)
    item_id: Mapped[str] = mapped_column(String(64))
    sessions: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CreditGrant(Base):
    """A credit grant sent to payments (GrantCredits), kept until payments confirms it
    (CreditsGranted); while unconfirmed it is sent again at `next_send_at` (grant_resender.py)."""

    __tablename__ = "credit_grants"
    __table_args__ = (
        CheckConstraint("credits > 0", name="credits_positive"),
        CheckConstraint("sends >= 1", name="sends_positive"),
        # The re-sender's scan: only unconfirmed grants, the longest overdue first.
        Index(
            "ix_credit_grants_unconfirmed_next_send_at",
            "next_send_at",
            postgresql_where=text("confirmed_at IS NULL"),
            sqlite_where=text("confirmed_at IS NULL"),
        ),
    )

    # "<order_id>:<line_no>": the key payments applies the grant once by.
    grant_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    credits: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_sent_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Times GrantCredits was emitted for it, the first included; the wait doubles with it.
    sends: Mapped[int] = mapped_column(Integer)
    # Stored rather than computed from last_sent_at and sends in the query: the scan is then one
    # indexed range, and a grant waiting out a long backoff never fills a batch ahead of one due.
    next_send_at: Mapped[datetime] = mapped_column(UtcDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
