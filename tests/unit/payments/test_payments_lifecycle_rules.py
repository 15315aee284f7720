"""Checkout Session and refund lifecycles as pure rules: where each Stripe signal moves us, and
that no sequence of moves ever goes backwards."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.payments.domain import (
    REFUND_MOVES,
    SESSION_MOVES,
    SESSION_STATUSES,
    reconciled_target,
    refund_status,
    session_target,
)

# The order statuses pass through; a move may skip ahead but never return.
RANK = {"open": 0, "processing": 1, "complete": 2, "failed": 2, "expired": 2}


@pytest.mark.parametrize(
    ("event_type", "payment_status", "target"),
    [
        ("checkout.session.completed", "paid", "complete"),
        ("checkout.session.completed", "no_payment_required", "complete"),
        ("checkout.session.completed", "unpaid", "processing"),
        ("checkout.session.async_payment_succeeded", "paid", "complete"),
        ("checkout.session.async_payment_failed", "unpaid", "failed"),
        ("checkout.session.expired", "unpaid", "expired"),
        ("checkout.session.created", None, None),
        ("charge.refunded", None, None),
    ],
)
def test_each_checkout_event_names_its_target(
    event_type: str, payment_status: str | None, target: str | None
) -> None:
    assert session_target(event_type, payment_status) == target


@pytest.mark.parametrize(
    ("status", "payment_status", "intent_status", "target"),
    [
        ("open", "unpaid", None, None),
        ("expired", "unpaid", None, "expired"),
        ("complete", "paid", "succeeded", "complete"),
        ("complete", "unpaid", "processing", "processing"),
        ("complete", "unpaid", "succeeded", "complete"),
        ("complete", "unpaid", "requires_payment_method", "failed"),
        ("complete", "unpaid", "canceled", "failed"),
        ("complete", "unpaid", None, "processing"),
    ],
)
def test_the_reconciler_reads_the_outcome_from_stripes_view(
    status: str, payment_status: str, intent_status: str | None, target: str | None
) -> None:
    assert reconciled_target(status, payment_status, intent_status) == target


def test_refund_statuses_map_onto_ours() -> None:
    assert [refund_status(s) for s in ("pending", "requires_action", "succeeded")] == [
        "pending",
        "pending",
        "succeeded",
    ]
    assert [refund_status(s) for s in ("failed", "canceled", None)] == [
        "failed",
        "canceled",
        "pending",
    ]


@given(st.lists(st.sampled_from(sorted(SESSION_MOVES)), max_size=12))
def test_no_sequence_of_session_moves_goes_backwards_or_emits_twice(targets: list[str]) -> None:
    status = "open"
    ends = 0
    for target in targets:
        if status in SESSION_MOVES[target]:  # type: ignore[index]
            assert RANK[target] > RANK[status]
            status = target
            ends += target in ("complete", "failed", "expired")
    assert ends <= 1
    assert status in SESSION_STATUSES


def test_a_session_that_ended_never_moves_again() -> None:
    for ended in ("complete", "failed", "expired"):
        assert all(ended not in sources for sources in SESSION_MOVES.values()), ended


def test_a_refund_only_fails_after_it_succeeded_never_succeeds_after_failing() -> None:
    assert "failed" not in REFUND_MOVES["succeeded"]
    assert "canceled" not in REFUND_MOVES["succeeded"]
    assert "succeeded" in REFUND_MOVES["failed"]
