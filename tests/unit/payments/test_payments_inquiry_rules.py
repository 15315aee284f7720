"""Answering the saga's InquirePayment as a pure rule: from what our row says and what Stripe
says, the next step is to answer from the row, ask Stripe, close the session at Stripe, or settle
the row to Stripe's outcome — never a guess."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.payments.domain import (
    ANSWER_FROM_ROW,
    ASK_STRIPE,
    EXPIRE_AT_STRIPE,
    SESSION_STATUSES,
    InquiryStep,
    SessionStatus,
    inquiry_step,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PAST = NOW - timedelta(minutes=3)
FUTURE = NOW + timedelta(minutes=20)


@dataclass(frozen=True)
class StripeView:
    """Stripe's current view of a session, as the gateway's CheckoutSession carries it."""

    status: str
    payment_status: str | None = "unpaid"
    payment_intent_status: str | None = None
    expires_at: datetime = PAST


def settle(target: SessionStatus) -> InquiryStep:
    return InquiryStep("settle", target)


@pytest.mark.parametrize("stored", ["complete", "failed", "expired"])
def test_a_row_that_holds_an_outcome_is_answered_from_the_row_without_asking_stripe(
    stored: str,
) -> None:
    assert inquiry_step(stored, None, NOW) == ANSWER_FROM_ROW
    # Whatever Stripe might say: an outcome we announced is never taken back.
    assert inquiry_step(stored, StripeView("open"), NOW) == ANSWER_FROM_ROW


@pytest.mark.parametrize("stored", ["open", "processing"])
def test_a_row_still_waiting_for_an_outcome_asks_stripe_first(stored: str) -> None:
    assert inquiry_step(stored, None, NOW) == ASK_STRIPE


@pytest.mark.parametrize(
    ("stored", "view", "step"),
    [
        # The webhook was lost: Stripe has the outcome, the row takes it.
        ("open", StripeView("complete", "paid", "succeeded"), settle("complete")),
        ("open", StripeView("expired"), settle("expired")),
        ("processing", StripeView("complete", "unpaid", "succeeded"), settle("complete")),
        (
            "processing",
            StripeView("complete", "unpaid", "requires_payment_method"),
            settle("failed"),
        ),
        # A delayed method: complete at Stripe, the money not there yet.
        ("open", StripeView("complete", "unpaid", "processing"), settle("processing")),
        ("processing", StripeView("complete", "unpaid", "processing"), ANSWER_FROM_ROW),
        # Open at Stripe and not due yet: the shopper may still pay; the row answers "open".
        ("open", StripeView("open", expires_at=FUTURE), ANSWER_FROM_ROW),
        # Open at Stripe past its expiry (Stripe's sweep lags, or its clock is behind ours).
        ("open", StripeView("open", expires_at=PAST), EXPIRE_AT_STRIPE),
        ("open", StripeView("open", expires_at=NOW), EXPIRE_AT_STRIPE),
    ],
)
def test_stripes_view_of_a_waiting_row_decides_the_step(
    stored: str, view: StripeView, step: InquiryStep
) -> None:
    assert inquiry_step(stored, view, NOW) == step


def test_a_session_stripe_refused_to_close_is_never_closed_again_in_one_inquiry() -> None:
    # After a refusal Stripe is asked again; if it still says open, the row answers "open".
    still_open = StripeView("open", expires_at=PAST)

    assert inquiry_step("open", still_open, NOW, may_expire=False) == ANSWER_FROM_ROW


def test_the_only_targets_are_forward_moves_of_the_row() -> None:
    views = [
        StripeView(status, payment, intent, when)
        for status in ("open", "complete", "expired")
        for payment in ("paid", "unpaid", "no_payment_required")
        for intent in (None, "processing", "succeeded", "canceled", "requires_payment_method")
        for when in (PAST, FUTURE)
    ]
    for stored in SESSION_STATUSES:
        for view in views:
            step = inquiry_step(stored, view, NOW)
            if step.action == "settle":
                assert step.target is not None and step.target != stored
                assert stored in ("open", "processing"), (stored, view)


@given(
    st.sampled_from(SESSION_STATUSES),
    st.sampled_from(["open", "complete", "expired"]),
    st.sampled_from([None, "paid", "unpaid"]),
    st.sampled_from([None, "processing", "succeeded", "canceled"]),
    st.booleans(),
)
def test_only_a_session_open_at_stripe_and_due_is_ever_closed(
    stored: str, status: str, payment: str | None, intent: str | None, due: bool
) -> None:
    view = StripeView(status, payment, intent, PAST if due else FUTURE)

    step = inquiry_step(stored, view, NOW)

    if step == EXPIRE_AT_STRIPE:
        assert (stored, status, due) == ("open", "open", True)
