"""Tables of the orders service's own database: orders, their lines and history, saga rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import NAMING_CONVENTION, BigIntPk
from shared.inbox import inbox_table
from shared.outbox import outbox_table


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)

ORDER_STATUSES = (
    "pending",
    "awaiting_payment",
    "payment_processing",
    "paid",
    "provisioning",
    "completed",
    "partially_completed",
    "compensating",
    "cancelled",
    "refunded",
    "refund_failed",
    "disputed",
)
_status_check = "status IN (" + ", ".join(f"'{s}'" for s in ORDER_STATUSES) + ")"


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(_status_check, name="status"),
        CheckConstraint("money_total >= 0", name="money_total"),
        CheckConstraint("credits_total >= 0", name="credits_total"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(100), index=True)
    cart_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(30))
    currency: Mapped[str] = mapped_column(String(3))
    money_total: Mapped[int] = mapped_column(BigInteger)
    credits_total: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[str | None] = mapped_column(String(36))
    payment_url: Mapped[str | None] = mapped_column(Text)
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    lines: Mapped[list[OrderLine]] = relationship(
        order_by="OrderLine.line_no", lazy="raise", cascade="all, delete-orphan"
    )
    history: Mapped[list[StatusChange]] = relationship(
        order_by="StatusChange.seq", lazy="raise", cascade="all, delete-orphan"
    )


class OrderLine(Base):
    __tablename__ = "order_lines"

    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(30))
    name: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[int] = mapped_column(BigInteger)
    unit_credits: Mapped[int | None] = mapped_column(BigInteger)
    paid_with: Mapped[str] = mapped_column(String(10))
    result: Mapped[str | None] = mapped_column(String(20))
    result_detail: Mapped[str | None] = mapped_column(Text)


class StatusChange(Base):
    __tablename__ = "order_status_history"

    seq: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    status: Mapped[str] = mapped_column(String(30))
    reason: Mapped[str] = mapped_column(Text)
    trace_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SagaInstance(Base):
    """One row per checkout. `version` is an optimistic lock: two replies for one saga handled
    at once (two replicas) cannot both commit; the loser is redelivered and sees the new state."""

    __tablename__ = "saga_instances"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    step: Mapped[str] = mapped_column(String(40), index=True)
    state: Mapped[dict[str, object]] = mapped_column(JSON)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __mapper_args__ = {"version_id_col": version}
