"""Version 1 of every command, reply and event in the checkout saga.

Commands are imperative and name the one service that handles them (`TARGET`); events are past
tense and go to whoever subscribes. A breaking change to a payload is a new class with
`VERSION = 2` beside the old one, never an edit of the old one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.messages.envelope import Command, Event

ItemKind = Literal["credit_pack", "session_package", "server_plan", "service_job"]
PaidWith = Literal["credits", "money"]

CART = "cart"
ORDERS = "orders"
PAYMENTS = "payments"
PROVISIONING = "provisioning"


class CheckoutLine(BaseModel):
    """A priced cart line frozen at checkout; prices come from the catalogue, never the client."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    line_no: int = Field(ge=1)
    item_id: str
    kind: ItemKind
    name: str
    quantity: int = Field(ge=1)
    unit_price: int = Field(ge=0, description="money, minor units")
    unit_credits: int | None = Field(default=None, ge=0)
    units_per_item: int = Field(default=1, ge=0, description="sessions, credits, ... per item")
    paid_with: PaidWith

    @property
    def money(self) -> int:
        return self.unit_price * self.quantity if self.paid_with == "money" else 0

    @property
    def credits(self) -> int:
        return (self.unit_credits or 0) * self.quantity if self.paid_with == "credits" else 0


class ItemResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    line_no: int
    item_id: str
    status: Literal["delivered", "scheduled", "failed"]
    detail: str = ""


class ItemResultV2(BaseModel):
    """One line's outcome counted in units (servers, jobs, packs: the line's quantity).

    `partially_delivered`: some units delivered, `units_failed` of `units` not; the saga refunds
    exactly the failed units' share. `failed` means every unit failed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    line_no: int
    item_id: str
    status: Literal["delivered", "partially_delivered", "scheduled", "failed"]
    detail: str = ""
    units: int = Field(ge=1)
    units_failed: int = Field(ge=0)

    @model_validator(mode="after")
    def _no_more_failed_than_bought(self) -> ItemResultV2:
        if self.units_failed > self.units:
            raise ValueError(f"{self.units_failed} of {self.units} units failed")
        return self


# --- cart -> orders -------------------------------------------------------------------------


class CheckoutRequested(Event):
    TYPE = "cart.checkout_requested"

    checkout_id: str
    cart_id: str
    user_id: str
    currency: str
    lines: tuple[CheckoutLine, ...] = Field(min_length=1)
    money_total: int = Field(ge=0)
    credits_total: int = Field(ge=0)


# --- orders -> payments: credits -------------------------------------------------------------


class ReserveCredits(Command):
    TYPE = "payments.reserve_credits"
    TARGET = PAYMENTS

    order_id: str
    user_id: str
    credits: int = Field(gt=0)


class CreditsReserved(Event):
    TYPE = "payments.credits_reserved"

    order_id: str
    credits: int


class CreditsRejected(Event):
    TYPE = "payments.credits_rejected"

    order_id: str
    reason: str
    available: int


class CaptureCredits(Command):
    TYPE = "payments.capture_credits"
    TARGET = PAYMENTS

    order_id: str
    user_id: str
    credits: int = Field(gt=0)


class CreditsCaptured(Event):
    TYPE = "payments.credits_captured"

    order_id: str
    credits: int


class ReleaseCredits(Command):
    TYPE = "payments.release_credits"
    TARGET = PAYMENTS

    order_id: str
    user_id: str


class CreditsReleased(Event):
    TYPE = "payments.credits_released"

    order_id: str
    credits: int


class RefundCredits(Command):
    """Gives back captured credits of items that were not delivered; `refund_key` makes it once."""

    TYPE = "payments.refund_credits"
    TARGET = PAYMENTS

    order_id: str
    user_id: str
    refund_key: str
    credits: int = Field(gt=0)
    reason: str


class CreditsRefunded(Event):
    TYPE = "payments.credits_refunded"

    order_id: str
    refund_key: str
    credits: int


class GrantCredits(Command):
    """Adds credits to an account; `grant_id` makes a repeated grant a no-op."""

    TYPE = "payments.grant_credits"
    TARGET = PAYMENTS

    grant_id: str
    user_id: str
    credits: int = Field(gt=0)
    reason: str
    order_id: str | None = None


class CreditsGranted(Event):
    TYPE = "payments.credits_granted"

    grant_id: str
    user_id: str
    credits: int


# --- orders -> payments: money ---------------------------------------------------------------


class PaymentLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    quantity: int = Field(ge=1)
    unit_amount: int = Field(ge=0)


class CreatePaymentSession(Command):
    TYPE = "payments.create_payment_session"
    TARGET = PAYMENTS

    order_id: str
    user_id: str
    currency: str
    amount_total: int = Field(gt=0)
    lines: tuple[PaymentLine, ...] = Field(min_length=1)
    expires_at: datetime


class PaymentSessionCreated(Event):
    TYPE = "payments.payment_session_created"

    order_id: str
    session_id: str
    url: str
    expires_at: datetime


class PaymentSessionFailed(Event):
    TYPE = "payments.payment_session_failed"

    order_id: str
    reason: str


class PaymentSucceeded(Event):
    TYPE = "payments.payment_succeeded"

    order_id: str
    session_id: str
    payment_intent_id: str | None
    amount: int
    currency: str


class PaymentFailed(Event):
    TYPE = "payments.payment_failed"

    order_id: str
    session_id: str
    reason: str


class PaymentExpired(Event):
    TYPE = "payments.payment_expired"

    order_id: str
    session_id: str


class InquirePayment(Command):
    """Orders asks what became of the order's payment before it acts on a silent deadline.
    Payments answers with the truth, re-announced: `PaymentSucceeded`, `PaymentFailed` or
    `PaymentExpired` (closing a session still open past its expiry first), or `PaymentPending`
    while the money is genuinely still on its way."""

    TYPE = "payments.inquire_payment"
    TARGET = PAYMENTS

    order_id: str


class PaymentPending(Event):
    """The answer to `InquirePayment` while no outcome exists yet (`status`: why, e.g. "open",
    "processing"): the saga keeps waiting and asks again later."""

    TYPE = "payments.payment_pending"

    order_id: str
    session_id: str | None
    status: str


class PaymentDisputed(Event):
    """The shopper's bank disputes the payment (`status` is Stripe's dispute status, e.g.
    `needs_response`, `under_review`, `won`, `lost`), said on every change of it. The order
    shows it; the money may be taken back (`lost`)."""

    TYPE = "payments.payment_disputed"

    order_id: str
    dispute_id: str
    status: str
    amount: int
    currency: str
    reason: str


class ExpirePaymentSession(Command):
    TYPE = "payments.expire_payment_session"
    TARGET = PAYMENTS

    order_id: str


class RefundPayment(Command):
    TYPE = "payments.refund_payment"
    TARGET = PAYMENTS

    order_id: str
    refund_key: str
    amount: int = Field(gt=0)
    reason: str


class PaymentRefunded(Event):
    TYPE = "payments.payment_refunded"

    order_id: str
    refund_key: str
    amount: int


class RefundFailed(Event):
    """A refund that will not reach the shopper: Stripe rejected it (`rejected`), or it failed or
    was canceled after Stripe accepted it (`failed` / `canceled`, possibly days after a
    `PaymentRefunded`). The order shows it; an operator retries or records a refund made
    elsewhere. Never retried blindly: the reason usually needs a human (a closed card, a
    dispute, money already returned in the Dashboard)."""

    TYPE = "payments.refund_failed"

    order_id: str
    refund_key: str
    amount: int
    status: Literal["rejected", "failed", "canceled"]
    reason: str


# --- orders -> provisioning ------------------------------------------------------------------


class CreateJob(Command):
    TYPE = "provisioning.create_job"
    TARGET = PROVISIONING

    order_id: str
    user_id: str
    lines: tuple[CheckoutLine, ...] = Field(min_length=1)


class JobCreated(Event):
    TYPE = "provisioning.job_created"

    order_id: str
    job_id: str


class JobRejected(Event):
    TYPE = "provisioning.job_rejected"

    order_id: str
    reason: str


class ProvisionOrder(Command):
    TYPE = "provisioning.provision_order"
    TARGET = PROVISIONING

    order_id: str


class OrderProvisioned(Event):
    TYPE = "provisioning.order_provisioned"

    order_id: str
    job_id: str
    results: tuple[ItemResult, ...]


class OrderProvisionedV2(Event):
    """Version 2: each result counts its units, so a line can be partly delivered. Version 1
    (`OrderProvisioned`) could only say a whole line failed; orders reads both."""

    TYPE = "provisioning.order_provisioned"
    VERSION = 2

    order_id: str
    job_id: str
    results: tuple[ItemResultV2, ...]


class ProvisioningFailed(Event):
    TYPE = "provisioning.provisioning_failed"

    order_id: str
    reason: str


class CancelJob(Command):
    TYPE = "provisioning.cancel_job"
    TARGET = PROVISIONING

    order_id: str
    reason: str


class JobCancelled(Event):
    TYPE = "provisioning.job_cancelled"

    order_id: str


# --- orders -> everyone: outcome -------------------------------------------------------------


class OrderCompleted(Event):
    TYPE = "orders.order_completed"

    order_id: str
    cart_id: str
    status: Literal["completed", "partially_completed"]


class OrderCancelled(Event):
    TYPE = "orders.order_cancelled"

    order_id: str
    cart_id: str
    reason: str


# --- cart -> orders: recovery ----------------------------------------------------------------


class InquireOrder(Command):
    """The cart asks after a checkout whose outcome never came. Orders re-announces the outcome
    (`OrderCompleted` / `OrderCancelled`) when the order has ended, and says nothing while it
    is still running."""

    TYPE = "orders.inquire_order"
    TARGET = ORDERS

    order_id: str
    cart_id: str
