"""Disputes and events about payments that are not ours, as pure rules: a dispute's row ends at
Stripe's newest status whatever order its events arrive in, and says what changed once; a
Checkout Session with no order of ours in it is recognised as foreign; a refund made outside is
kept under a key the saga never uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.payments.domain import (
    DISPUTE_STATUSES,
    DisputeChange,
    DisputeState,
    could_be_our_session,
    dispute_changes,
    dispute_supersedes,
    external_refund_key,
    is_external_refund,
)

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def state(status: str, seconds: int = 0, amount: int = 2999) -> DisputeState:
    return DisputeState(status, amount, "eur", "fraudulent", T0 + timedelta(seconds=seconds))


def recorded(events: list[DisputeState]) -> DisputeState:
    """What the row holds after these events, applied one after the other as they arrive."""
    row: DisputeState | None = None
    for incoming in events:
        if row is None or dispute_supersedes(row, incoming):
            row = incoming
    assert row is not None
    return row


def test_a_later_event_wins_and_an_earlier_one_changes_nothing() -> None:
    opened, closed = state("needs_response", 0), state("lost", 60)

    assert dispute_supersedes(opened, closed)
    assert not dispute_supersedes(closed, opened)
    assert dispute_changes(closed, opened, order_id="o", dispute_id="dp") is None


def test_within_one_second_the_status_further_along_wins() -> None:
    assert dispute_supersedes(state("needs_response"), state("under_review"))
    assert dispute_supersedes(state("warning_under_review"), state("needs_response"))
    assert not dispute_supersedes(state("won"), state("needs_response"))
    # A status Stripe added after this code counts as least far along, and later still wins.
    assert not dispute_supersedes(state("needs_response"), state("escalated"))
    assert dispute_supersedes(state("needs_response"), state("escalated", 1))


@given(st.permutations([state("needs_response", 0), state("under_review", 30), state("won", 90)]))
def test_events_in_any_order_leave_the_newest_status(events: list[DisputeState]) -> None:
    assert recorded(events).status == "won"


@given(st.lists(st.sampled_from(DISPUTE_STATUSES), min_size=1, max_size=6))
def test_events_of_one_second_in_any_order_leave_one_status(statuses: list[str]) -> None:
    events = [state(s) for s in statuses]
    assert recorded(events) == recorded(list(reversed(events)))


def test_a_new_dispute_and_a_new_status_are_said_a_repeat_is_not() -> None:
    opened, withdrawn, lost = state("needs_response"), state("needs_response", 1), state("lost", 9)

    first = dispute_changes(None, opened, order_id="o-1", dispute_id="dp_1")
    again = dispute_changes(opened, withdrawn, order_id="o-1", dispute_id="dp_1")
    closing = dispute_changes(withdrawn, lost, order_id="o-1", dispute_id="dp_1")

    assert first == DisputeChange("o-1", "dp_1", "needs_response", None, 2999, "eur", "fraudulent")
    assert again is None  # funds_withdrawn: money moved, the status did not
    assert closing is not None and closing.previous_status == "needs_response"
    assert closing.closed and not first.closed


def test_a_session_with_no_order_of_ours_in_it_is_foreign() -> None:
    order = "5a4c27b8-40ce-43f2-a6f6-3c65f999285f"

    assert could_be_our_session({"metadata": {"order_id": order}, "client_reference_id": order})
    assert could_be_our_session({"metadata": {}, "client_reference_id": order})
    assert not could_be_our_session({"metadata": {}, "client_reference_id": None})
    assert not could_be_our_session({"metadata": None})
    # Longer than any order id we store: another integration's reference.
    assert not could_be_our_session({"client_reference_id": "x" * 37})


def test_a_refund_made_outside_has_a_key_of_its_own() -> None:
    key = external_refund_key("re_123")

    assert (key, is_external_refund(key)) == ("external:re_123", True)
    assert not is_external_refund("failed-lines-2")
    assert not is_external_refund("late-payment-retry1")
