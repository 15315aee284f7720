"""The saga's vocabulary: steps, order statuses, the remembered state and a decision. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from shared.messages import Contract
from shared.messages import contracts as c


class Step(StrEnum):
    RESERVING_CREDITS = "reserving_credits"
    CREATING_JOB = "creating_job"
    CREATING_PAYMENT_SESSION = "creating_payment_session"
    AWAITING_PAYMENT = "awaiting_payment"
    CAPTURING_CREDITS = "capturing_credits"
    PROVISIONING = "provisioning"
    # Provisioning stayed silent past its last deadline: CancelJob went out and the saga waits
    # for its answer (cancelled: refund all; results: act on them). Never refunds on silence.
    FENCING_JOB = "fencing_job"
    REFUNDING = "refunding"
    COMPENSATING = "compensating"
    DONE = "done"


class OrderStatus(StrEnum):
    PENDING = "pending"
    AWAITING_PAYMENT = "awaiting_payment"
    # Paid by a method that settles days later (SEPA Direct Debit, ACH, Bacs): the money is on
    # its way, not yet taken; the saga waits `processing_window`, not the session's expiry.
    PAYMENT_PROCESSING = "payment_processing"
    PAID = "paid"
    PROVISIONING = "provisioning"
    COMPLETED = "completed"
    PARTIALLY_COMPLETED = "partially_completed"
    COMPENSATING = "compensating"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"
    # A refund Stripe rejected, or that failed after it was accepted: the saga is over, the
    # shopper is owed money, and only an operator moves it on (retry it, or record a refund
    # made elsewhere).
    REFUND_FAILED = "refund_failed"
    # The shopper's bank disputes the payment (open, or lost: the money was taken back).
    DISPUTED = "disputed"


TERMINAL = frozenset(
    {
        OrderStatus.COMPLETED,
        OrderStatus.PARTIALLY_COMPLETED,
        OrderStatus.CANCELLED,
        OrderStatus.REFUNDED,
        OrderStatus.REFUND_FAILED,
        OrderStatus.DISPUTED,
    }
)

# How the reason recorded on an order whose step owner keeps silent begins (see `_ask_again`).
NEEDS_ATTENTION = "needs attention:"

# Until payment, the shopper may still walk away; after it, only refunds undo anything.
CANCELLABLE = frozenset(
    {
        Step.RESERVING_CREDITS,
        Step.CREATING_JOB,
        Step.CREATING_PAYMENT_SESSION,
        Step.AWAITING_PAYMENT,
    }
)


class SagaState(BaseModel):
    """Everything the saga remembers between replies; stored as JSON in the saga row."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    cart_id: str
    user_id: str
    currency: str
    lines: tuple[c.CheckoutLine, ...]
    money_total: int
    credits_total: int
    step: Step
    status: OrderStatus
    # When the current step gives up waiting (None once done); fired by the deadline scheduler.
    deadline: datetime | None = None
    attempts: int = 0
    credits_reserved: bool = False
    credits_captured: bool = False
    job_id: str | None = None
    payment_session_id: str | None = None
    payment_url: str | None = None
    payment_deadline: datetime | None = None
    payment_intent_id: str | None = None
    amount_paid: int = 0
    # The currency Stripe charged in (upper case); None until a payment is reported.
    currency_paid: str | None = None
    # Replies the compensation or refund still waits for, by message type.
    awaiting: tuple[str, ...] = ()
    cancel_reason: str | None = None
    # Per line, counted in units (see `_counted`).
    results: tuple[c.ItemResultV2, ...] = ()
    refund_money: int = 0
    refund_credits: int = 0
    refund_key: str | None = None
    # Why the refund was decided; sent unchanged with every re-send of it.
    refund_reason: str | None = None
    # Why the money refund will not reach the shopper (Stripe's answer); None while it may.
    refund_failed: str | None = None
    # Refunds retried by an operator after a failure: each retry is a new refund (a new key).
    refund_retries: int = 0
    # Stripe's status of a dispute of the payment; the status the order had before it opened.
    dispute: str | None = None
    status_before_dispute: OrderStatus | None = None
    # The status the order takes once the refunds in flight are confirmed.
    after_refund: OrderStatus | None = None
    # What payments last said of a payment that has no outcome yet ("open", "processing").
    payment_pending: str | None = None

    @field_validator("results", mode="before")
    @classmethod
    def _counted(cls, value: Any) -> Any:
        """A row stored before units were counted holds version 1 results: read each as one
        unit, failed or not. The refund was decided from them already; only the line's status
        is used again (for the order's line results)."""
        if not isinstance(value, list | tuple):
            return value
        return [
            {**r, "units": 1, "units_failed": int(r.get("status") == "failed")}
            if isinstance(r, dict) and "units" not in r
            else r
            for r in value
        ]

    def evolve(self, **changes: object) -> SagaState:
        return self.model_copy(update=changes)


@dataclass(frozen=True)
class Decision:
    state: SagaState
    send: tuple[Contract, ...] = ()
    # The order status changes this decision makes, in order, each with its reason.
    changes: tuple[tuple[OrderStatus, str], ...] = ()
    ignored: bool = False


@dataclass(frozen=True)
class Timing:
    payment_window: timedelta = timedelta(hours=1)
    # How long a step waits for its reply before the saga acts on the silence.
    step_timeout: timedelta = timedelta(seconds=60)
    provisioning_timeout: timedelta = timedelta(seconds=300)
    # After the Stripe session's own expiry, time for its expired/paid webhook to arrive.
    payment_grace: timedelta = timedelta(seconds=120)
    # Re-sends of an idempotent command before provisioning is asked to cancel; also the
    # unanswered questions after which an order is flagged as needing attention.
    max_attempts: int = 3
    # A step's owner that stays silent is asked again after step_timeout, doubling up to this.
    max_ask_interval: timedelta = timedelta(minutes=30)
    # When payments says the money is still on its way, how long until it is asked again.
    pending_recheck: timedelta = timedelta(minutes=10)
    # How long a payment that is processing is waited for: Stripe says delayed-notification
    # methods confirm within up to 14 business days; three weeks cover those and holidays.
    processing_window: timedelta = timedelta(days=21)
