"""A money refund's lifecycle as pure rules: pending -> succeeded | failed | canceled, or
rejected when Stripe refused it; a refund that will not reach the shopper says why, gives its
amount back once, and is announced once whatever order Stripe's news arrives in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.payments.domain import (
    REFUND_FAILURES,
    REFUND_HOLDS_MONEY,
    REFUND_MOVES,
    REFUND_STATUSES,
    refund_failure,
    refund_failure_reason,
    refund_status,
)


def test_only_stripes_own_statuses_settle_a_refund() -> None:
    # `rejected` is ours: Stripe never reports it, so it never moves a refund there.
    assert [refund_status(s) for s in ("rejected", "requires_action", "", None)] == ["pending"] * 4
    assert all("rejected" not in sources for sources in REFUND_MOVES.values())
    assert "rejected" not in REFUND_MOVES


@pytest.mark.parametrize(
    ("status", "stripe_reason", "reason"),
    [
        ("failed", "lost_or_stolen_card", "lost_or_stolen_card"),
        ("failed", None, "unknown"),
        ("canceled", None, "canceled at Stripe before it was paid out"),
        ("rejected", "charge_already_refunded", "charge_already_refunded"),
        ("succeeded", "lost_or_stolen_card", None),
        ("pending", None, None),
    ],
)
def test_a_refund_that_will_not_reach_the_shopper_always_says_why(
    status: str, stripe_reason: str | None, reason: str | None
) -> None:
    assert refund_failure_reason(status, stripe_reason) == reason
    assert (refund_failure(status) is not None) is (reason is not None)


def test_every_status_either_holds_its_amount_or_is_a_failure() -> None:
    assert sorted([*REFUND_HOLDS_MONEY, *REFUND_FAILURES]) == sorted(REFUND_STATUSES)


@given(st.lists(st.sampled_from(sorted(REFUND_MOVES)), max_size=12))
def test_stripes_news_in_any_order_announces_a_failure_once_and_gives_back_once(
    news: list[str],
) -> None:
    status = "pending"
    announced = given_back = 0
    for target in news:
        if status not in REFUND_MOVES[target]:  # type: ignore[index]
            continue  # the conditional UPDATE matches nothing: no effect, no message
        given_back += status in REFUND_HOLDS_MONEY and target not in REFUND_HOLDS_MONEY
        announced += refund_failure(target) is not None
        status = target
    assert announced <= 1
    assert given_back == announced
