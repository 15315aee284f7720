"""Credit ledger rules and Checkout Session parameters: pure, no I/O.

Accounts hold credits and are credit-normal: an entry moves `amount` from its debit account to its
credit account, so an account's balance is (sum credited) - (sum debited). `system:issued` goes
negative by exactly the credits ever granted, so all accounts always sum to zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, get_args

from shared.delivery import PermanentError

EntryKind = Literal["grant", "reserve", "capture", "release", "refund"]
ENTRY_KINDS: tuple[EntryKind, ...] = ("grant", "reserve", "capture", "release", "refund")
ReservationStatus = Literal["reserved", "captured", "released"]
RESERVATION_STATUSES: tuple[ReservationStatus, ...] = ("reserved", "captured", "released")
SessionStatus = Literal["open", "processing", "complete", "failed", "expired"]
SESSION_STATUSES: tuple[SessionStatus, ...] = (
    "open",
    "processing",
    "complete",
    "failed",
    "expired",
)
RefundStatus = Literal["pending", "succeeded", "failed", "canceled", "rejected"]
REFUND_STATUSES: tuple[RefundStatus, ...] = (
    "pending",
    "succeeded",
    "failed",
    "canceled",
    "rejected",
)
# A refund that will not reach the shopper: Stripe refused to make it (`rejected`, ours alone:
# no refund exists at Stripe), or it failed or was canceled after Stripe accepted it.
RefundFailure = Literal["rejected", "failed", "canceled"]
REFUND_FAILURES: tuple[RefundFailure, ...] = ("rejected", "failed", "canceled")

SYSTEM_ISSUED = "system:issued"
SYSTEM_REVENUE = "system:revenue"

# Stripe accepts expires_at between 30 minutes and 24 hours after the session is created; the
# margins absorb the time between our clock reading and Stripe's, in either direction.
STRIPE_MIN_EXPIRY = timedelta(minutes=30)
STRIPE_MAX_EXPIRY = timedelta(hours=24)
EXPIRY_MARGIN = timedelta(minutes=2)


class InsufficientCredits(Exception):
    def __init__(self, *, available: int, requested: int) -> None:
        super().__init__(f"{requested} credits requested, {available} available")
        self.available = available
        self.requested = requested


class CaptureExceedsReservation(PermanentError):
    def __init__(self, *, reserved: int, requested: int) -> None:
        super().__init__(f"capture of {requested} credits exceeds the {reserved} reserved")
        self.reserved = reserved
        self.requested = requested


class ReservationNotCapturable(PermanentError):
    """Capture without a live reservation: the saga never sends that, so it is a bug to surface."""


class InvalidSeed(ValueError):
    pass


class RefundExceedsCapture(PermanentError):
    """More credits to refund than the order captured minus what was refunded already."""

    def __init__(self, *, order_id: str, requested: int) -> None:
        super().__init__(
            f"refund of {requested} credits for order {order_id} exceeds its captured credits "
            "not yet refunded"
        )
        self.order_id = order_id
        self.requested = requested


class RefundKeyReused(PermanentError):
    """One refund key of an order was sent again with a different amount."""


class InquiryRefused(PermanentError):
    """Stripe refused (not for a passing reason) to show a session we stored: asking again
    cannot help, so the inquiry dead-letters with Stripe's reason for an operator to read."""


def available_account(user_id: str) -> str:
    return f"user:{user_id}:available"


def reserved_account(user_id: str) -> str:
    return f"user:{user_id}:reserved"


@dataclass(frozen=True)
class Balance:
    available: int = 0
    reserved: int = 0


@dataclass(frozen=True)
class Posting:
    """One ledger entry and what it does to the user's cached balance columns."""

    kind: EntryKind
    user_id: str
    amount: int
    debit_account: str
    credit_account: str
    available_delta: int
    reserved_delta: int

    def applied_to(self, balance: Balance) -> Balance:
        """The balance after this posting; raises when it would go negative."""
        available = balance.available + self.available_delta
        reserved = balance.reserved + self.reserved_delta
        if available < 0:
            raise InsufficientCredits(available=balance.available, requested=self.amount)
        if reserved < 0:
            raise ValueError(f"{self.kind} of {self.amount} exceeds {balance.reserved} reserved")
        return Balance(available, reserved)


def posting(kind: EntryKind, user_id: str, amount: int) -> Posting:
    if amount <= 0:
        raise ValueError(f"a {kind} must move a positive amount, not {amount}")
    avail, held = available_account(user_id), reserved_account(user_id)
    # (debit, credit, available delta, reserved delta) for each kind.
    rules: dict[EntryKind, tuple[str, str, int, int]] = {
        "grant": (SYSTEM_ISSUED, avail, amount, 0),
        "reserve": (avail, held, -amount, amount),
        "capture": (held, SYSTEM_REVENUE, 0, -amount),
        "release": (held, avail, amount, -amount),
        "refund": (SYSTEM_REVENUE, avail, amount, 0),
    }
    debit, credit, d_available, d_reserved = rules[kind]
    return Posting(kind, user_id, amount, debit, credit, d_available, d_reserved)


class EntryLike(Protocol):
    @property
    def amount(self) -> int: ...
    @property
    def debit_account(self) -> str: ...
    @property
    def credit_account(self) -> str: ...


def account_balances(entries: Iterable[EntryLike]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for entry in entries:
        totals[entry.debit_account] = totals.get(entry.debit_account, 0) - entry.amount
        totals[entry.credit_account] = totals.get(entry.credit_account, 0) + entry.amount
    return totals


def balances_from_entries(entries: Iterable[EntryLike]) -> dict[str, Balance]:
    """Every user's available/reserved recomputed from the ledger alone, keyed by user id."""
    users: dict[str, Balance] = {}
    for account, total in account_balances(entries).items():
        scope, _, rest = account.partition(":")
        if scope != "user":
            continue
        user_id, _, bucket = rest.rpartition(":")
        current = users.get(user_id, Balance())
        if bucket == "available":
            users[user_id] = Balance(total, current.reserved)
        elif bucket == "reserved":
            users[user_id] = Balance(current.available, total)
    return users


def split_capture(reserved: int, requested: int) -> tuple[int, int]:
    """(credits captured, credits released): capturing less than reserved frees the rest."""
    if requested > reserved:
        raise CaptureExceedsReservation(reserved=reserved, requested=requested)
    return requested, reserved - requested


def parse_seed_credits(spec: str) -> Mapping[str, int]:
    """'demo-shopper=500, alice=100' -> {'demo-shopper': 500, 'alice': 100}."""
    seeds: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        user_id, sep, amount = (s.strip() for s in part.partition("="))
        if not sep or not user_id or not amount.isdigit() or int(amount) <= 0:
            raise InvalidSeed(f"seed credits entry {part!r} is not user=<positive int>")
        if user_id in seeds:
            raise InvalidSeed(f"seed credits name {user_id!r} twice")
        seeds[user_id] = int(amount)
    return seeds


class PaymentWindowPassed(Exception):
    """The session's expiry, fixed when the command was sent, is too close for Stripe now."""


def checkout_expiry(requested: datetime, *, sent_at: datetime, now: datetime) -> datetime:
    """The requested session deadline moved into the window Stripe accepts, reckoned from when
    the command was sent, not from this delivery: a redelivery (after a Stripe timeout or an
    outage) sends the very same `expires_at`, as one idempotency key needs one set of parameters.

    Raises PaymentWindowPassed when that moment is no longer far enough ahead for Stripe (the
    command waited so long that the shopper's window has mostly gone)."""
    earliest = sent_at + STRIPE_MIN_EXPIRY + EXPIRY_MARGIN
    latest = sent_at + STRIPE_MAX_EXPIRY - EXPIRY_MARGIN
    expiry = min(max(requested, earliest), latest)
    if expiry < now + STRIPE_MIN_EXPIRY:
        raise PaymentWindowPassed(f"payment_window_passed: the session would expire at {expiry}")
    return expiry


def as_utc(moment: datetime) -> datetime:
    # SQLite hands timezone-aware columns back naive; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def checkout_url(template: str, *, order_id: str) -> str:
    # Stripe itself fills {CHECKOUT_SESSION_ID}; only our own placeholder is replaced here.
    return template.replace("{ORDER_ID}", order_id)


class PricedLine(Protocol):
    @property
    def quantity(self) -> int: ...
    @property
    def unit_amount(self) -> int: ...


def lines_total(lines: Iterable[PricedLine]) -> int:
    """What Stripe will charge for these line items, in minor units."""
    return sum(line.quantity * line.unit_amount for line in lines)


# --- Checkout Session and refund lifecycles --------------------------------------------------

# Status only moves forward: each target lists the statuses it may be reached from. A paid or
# failed session never becomes processing again; an expired one was never paid.
SESSION_MOVES: Mapping[SessionStatus, tuple[SessionStatus, ...]] = {
    "processing": ("open",),
    "complete": ("open", "processing"),
    "failed": ("open", "processing"),
    "expired": ("open",),
}
# Stripe can fail a refund after it succeeded (the bank returns it), never the other way round.
# Nothing moves to `rejected`: a refund Stripe refused is stored so, and never moves again.
REFUND_MOVES: Mapping[RefundStatus, tuple[RefundStatus, ...]] = {
    "succeeded": ("pending",),
    "failed": ("pending", "succeeded"),
    "canceled": ("pending",),
}
# Refunds in these statuses count against what may still be refunded; the others gave their
# amount back, so the operator's retry under a new key fits.
REFUND_HOLDS_MONEY: tuple[RefundStatus, ...] = ("pending", "succeeded")

PAID_STATUSES = frozenset({"paid", "no_payment_required"})
_ASYNC_TARGETS: Mapping[str, SessionStatus] = {
    "checkout.session.async_payment_succeeded": "complete",
    "checkout.session.async_payment_failed": "failed",
    "checkout.session.expired": "expired",
}


def session_target(event_type: str, payment_status: str | None) -> SessionStatus | None:
    """Where a checkout.session.* webhook event moves our session; None: not a session move."""
    if event_type == "checkout.session.completed":
        # A delayed method (SEPA, bank transfer) completes the session before the money arrives.
        return "complete" if payment_status in PAID_STATUSES else "processing"
    return _ASYNC_TARGETS.get(event_type)


def reconciled_target(
    session_status: str, payment_status: str | None, intent_status: str | None
) -> SessionStatus | None:
    """Where Stripe's current view of a session moves ours; None while it is still open.

    A completed-but-unpaid session is settled by its payment intent: `succeeded` is paid, and a
    delayed payment that failed leaves the intent waiting for a new method or canceled.
    """
    if session_status == "expired":
        return "expired"
    if session_status != "complete":
        return None
    if payment_status in PAID_STATUSES or intent_status == "succeeded":
        return "complete"
    if intent_status in ("requires_payment_method", "canceled"):
        return "failed"
    return "processing"


# --- answering the saga's InquirePayment -----------------------------------------------------

# Rows in these statuses wait for an outcome that a lost webhook may have carried.
AWAITING_OUTCOME: tuple[SessionStatus, ...] = ("open", "processing")
# PaymentPending's status when no session row exists yet (the other statuses are the row's).
NO_SESSION = "no_session"

InquiryAction = Literal["answer_from_row", "ask_stripe", "expire_at_stripe", "settle"]


@dataclass(frozen=True)
class InquiryStep:
    """The next step in answering an inquiry (`inquiry_step`)."""

    action: InquiryAction
    # With "settle": the status Stripe's view moves the row to.
    target: SessionStatus | None = None


# The row's outcome announced again, or PaymentPending with the row's status while it has none.
ANSWER_FROM_ROW = InquiryStep("answer_from_row")
ASK_STRIPE = InquiryStep("ask_stripe")
# Stripe still offers the session for payment past its expiry: close it, then settle as it says.
EXPIRE_AT_STRIPE = InquiryStep("expire_at_stripe")


class StripeSessionView(Protocol):
    """What `inquiry_step` reads of Stripe's current view of a session."""

    @property
    def status(self) -> str: ...
    @property
    def payment_status(self) -> str | None: ...
    @property
    def payment_intent_status(self) -> str | None: ...
    @property
    def expires_at(self) -> datetime: ...


def inquiry_step(
    stored: str, remote: StripeSessionView | None, now: datetime, *, may_expire: bool = True
) -> InquiryStep:
    """The next step in answering InquirePayment for a session our row holds as `stored`,
    given Stripe's view of it (None: not asked yet).

    Nothing is inferred from silence: an outcome comes from the row or from Stripe. The saga
    asks only after the session's expiry plus a grace, so a session Stripe still offers past its
    `expires_at` is closed at Stripe first — then it can no longer be paid and its status is the
    truth. `may_expire=False` after Stripe refused to close it: the answer is then the row's."""
    if stored not in AWAITING_OUTCOME:
        return ANSWER_FROM_ROW
    if remote is None:
        return ASK_STRIPE
    target = reconciled_target(remote.status, remote.payment_status, remote.payment_intent_status)
    if target is None:  # open at Stripe
        due = stored == "open" and as_utc(remote.expires_at) <= now
        return EXPIRE_AT_STRIPE if due and may_expire else ANSWER_FROM_ROW
    if target == stored:
        return ANSWER_FROM_ROW
    return InquiryStep("settle", target)


_STRIPE_REFUND_ENDS: Mapping[str, RefundStatus] = {
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
}


def refund_status(stripe_status: str | None) -> RefundStatus:
    """Our status of a Stripe refund; `requires_action` waits for the customer, like pending."""
    return _STRIPE_REFUND_ENDS.get(stripe_status or "", "pending")


def refund_failure(status: str) -> RefundFailure | None:
    """`status` as a RefundFailure when the refund will not reach the shopper, else None."""
    for failure in REFUND_FAILURES:
        if status == failure:
            return failure
    return None


def refund_failure_reason(status: str, stripe_reason: str | None) -> str | None:
    """Why a refund in `status` did not reach the shopper, as the saga and operators read it:
    Stripe's `failure_reason` (`lost_or_stolen_card`, `expired_or_canceled_card`, ...) or its
    refusal. Stripe gives none for a canceled refund, and may leave it out of a failed one.
    None while the refund may still reach the shopper (pending, succeeded)."""
    failure = refund_failure(status)
    if failure is None:
        return None
    if stripe_reason:
        return stripe_reason
    return "canceled at Stripe before it was paid out" if failure == "canceled" else "unknown"


# --- events about payments this service did not make ----------------------------------------

# The longest order id payments stores (payment_sessions.order_id): the cart's ids are UUIDs.
ORDER_ID_MAX_LENGTH = 36


def could_be_our_session(session: Mapping[str, Any]) -> bool:
    """Whether a Checkout Session Stripe reports may be one we created: we put the order id in
    its `metadata.order_id` and its `client_reference_id`. One with neither (a Payment Link,
    another integration on the account, `stripe trigger`) never will have a row here."""
    metadata = session.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("order_id"):
        return True
    reference = session.get("client_reference_id")
    return isinstance(reference, str) and 0 < len(reference) <= ORDER_ID_MAX_LENGTH


# A refund of one of our payments that we did not make (in the Dashboard, by another tool) is
# recorded under this key prefix, so it counts against what the saga may still refund. The
# saga's own keys ("late-payment", "failed-lines-2", ...) never start with it.
EXTERNAL_REFUND_PREFIX = "external:"
EXTERNAL_REFUND_REASON = "refunded outside this service (Stripe Dashboard or another integration)"


def external_refund_key(stripe_refund_id: str) -> str:
    return f"{EXTERNAL_REFUND_PREFIX}{stripe_refund_id}"


def is_external_refund(refund_key: str) -> bool:
    """A refund nobody asked us for: nothing is announced about it, whatever becomes of it."""
    return refund_key.startswith(EXTERNAL_REFUND_PREFIX)


# --- disputes ---------------------------------------------------------------------------------

# Stripe's statuses of a dispute (`warning_*`: an inquiry, before any chargeback). The table has
# no CHECK on them: Stripe adds statuses (`prevented` is recent), and a dispute of ours in a new
# one must still be recorded, not refused by the database and replayed for a day.
DisputeStatus = Literal[
    "warning_needs_response",
    "warning_under_review",
    "warning_closed",
    "needs_response",
    "under_review",
    "won",
    "lost",
    "prevented",
]
DISPUTE_STATUSES: tuple[DisputeStatus, ...] = get_args(DisputeStatus)
# How far along its lifecycle each status is (inquiry, chargeback, closed). Stripe's event
# `created` has whole seconds: of two events in one second, the status further along is newer.
_DISPUTE_STAGES: Mapping[str, int] = {
    "warning_needs_response": 0,
    "warning_under_review": 1,
    "needs_response": 2,
    "under_review": 3,
    "warning_closed": 4,
    "won": 4,
    "lost": 4,
    "prevented": 4,
}
DISPUTE_CLOSED: frozenset[str] = frozenset({"warning_closed", "won", "lost", "prevented"})


@dataclass(frozen=True)
class DisputeState:
    """A dispute as one Stripe event shows it (or as its row holds it)."""

    status: str
    amount: int
    currency: str
    reason: str
    # The `created` of the Stripe event that showed this status.
    at: datetime


@dataclass(frozen=True)
class DisputeChange:
    """What a dispute's move announces to the saga (`PaymentDisputed`), also logged at warning
    and listed to operators."""

    order_id: str
    dispute_id: str
    status: str
    # None when the dispute is new to us.
    previous_status: str | None
    amount: int
    currency: str
    reason: str

    @property
    def closed(self) -> bool:
        return self.status in DISPUTE_CLOSED


def dispute_supersedes(stored: DisputeState, incoming: DisputeState) -> bool:
    """Whether `incoming` is newer than the row's `stored` state: the later event wins, so a
    dispute's events may arrive in any order; within one second, the status further along.
    A status Stripe added after this code counts as the least far along."""
    return _dispute_order(incoming) > _dispute_order(stored)


def _dispute_order(state: DisputeState) -> tuple[datetime, int, str]:
    # The name last: a total order, so events in any order leave the same row, even for two
    # statuses of one stage in one second (which Stripe never sends for one dispute).
    return as_utc(state.at), _DISPUTE_STAGES.get(state.status, -1), state.status


def dispute_changes(
    stored: DisputeState | None, incoming: DisputeState, *, order_id: str, dispute_id: str
) -> DisputeChange | None:
    """What recording `incoming` over the row's `stored` state (None: no row yet) announces:
    nothing when it is older than the row (an event out of order) or leaves the status as it
    was (`funds_withdrawn` after `created`, a redelivery)."""
    if stored is not None and (
        not dispute_supersedes(stored, incoming) or stored.status == incoming.status
    ):
        return None
    return DisputeChange(
        order_id=order_id,
        dispute_id=dispute_id,
        status=incoming.status,
        previous_status=None if stored is None else stored.status,
        amount=incoming.amount,
        currency=incoming.currency,
        reason=incoming.reason,
    )
