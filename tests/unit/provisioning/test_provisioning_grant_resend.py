"""When a credit grant payments has not confirmed is sent again, without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.provisioning import domain

FIRST = timedelta(minutes=15)
CAP = timedelta(hours=6)


def test_the_first_resend_waits_the_configured_interval() -> None:
    assert domain.resend_wait(1, first=FIRST, cap=CAP) == FIRST


def test_each_send_doubles_the_wait_until_the_cap() -> None:
    waits = [domain.resend_wait(sends, first=FIRST, cap=CAP) for sends in range(1, 9)]
    assert [w / FIRST for w in waits] == [1, 2, 4, 8, 16, 24, 24, 24]


def test_a_cap_below_the_first_interval_wins() -> None:
    assert domain.resend_wait(1, first=CAP, cap=FIRST) == FIRST


@given(sends=st.integers(min_value=1, max_value=10**9))
def test_the_wait_never_passes_the_cap_however_often_a_grant_was_sent(sends: int) -> None:
    # A grant payments never confirms is sent for as long as it stays unconfirmed: the wait
    # must stay a sane timedelta, not overflow, after any number of sends.
    wait = domain.resend_wait(sends, first=FIRST, cap=CAP)
    assert FIRST <= wait <= CAP


def test_a_grant_is_sent_at_least_once() -> None:
    with pytest.raises(ValueError):
        domain.resend_wait(0, first=FIRST, cap=CAP)


def test_the_next_send_is_the_wait_after_the_last_one() -> None:
    sent_at = datetime(2026, 1, 1, tzinfo=UTC)
    timing = domain.ResendTiming(first=FIRST, cap=CAP)
    assert timing.next_send_at(sends=3, sent_at=sent_at) == sent_at + 4 * FIRST


def test_a_first_wait_of_nothing_is_refused() -> None:
    # It would never double towards the cap: every unconfirmed grant would be due at once.
    with pytest.raises(ValueError):
        domain.resend_wait(3, first=timedelta(0), cap=CAP)
