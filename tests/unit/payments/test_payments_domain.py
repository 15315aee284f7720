"""The ledger's posting rules, balance recomputation and Checkout parameters, without I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.payments.domain import (
    ENTRY_KINDS,
    SYSTEM_ISSUED,
    SYSTEM_REVENUE,
    Balance,
    CaptureExceedsReservation,
    InsufficientCredits,
    InvalidSeed,
    PaymentWindowPassed,
    Posting,
    account_balances,
    balances_from_entries,
    checkout_expiry,
    checkout_url,
    lines_total,
    parse_seed_credits,
    posting,
    split_capture,
)


@dataclass(frozen=True)
class Entry:
    amount: int
    debit_account: str
    credit_account: str


def entry_of(p: Posting) -> Entry:
    return Entry(p.amount, p.debit_account, p.credit_account)


# --- posting rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "debit", "credit", "available", "reserved"),
    [
        ("grant", SYSTEM_ISSUED, "user:u1:available", 7, 0),
        ("reserve", "user:u1:available", "user:u1:reserved", -7, 7),
        ("capture", "user:u1:reserved", SYSTEM_REVENUE, 0, -7),
        ("release", "user:u1:reserved", "user:u1:available", 7, -7),
        ("refund", SYSTEM_REVENUE, "user:u1:available", 7, 0),
    ],
)
def test_each_kind_moves_credits_between_its_two_accounts(
    kind: str, debit: str, credit: str, available: int, reserved: int
) -> None:
    p = posting(kind, "u1", 7)  # type: ignore[arg-type]

    assert (p.debit_account, p.credit_account) == (debit, credit)
    assert (p.available_delta, p.reserved_delta) == (available, reserved)


def test_the_cached_deltas_agree_with_the_accounts_each_posting_touches() -> None:
    for kind in ENTRY_KINDS:
        p = posting(kind, "u1", 5)
        recomputed = balances_from_entries([entry_of(p)]).get("u1", Balance())
        assert recomputed == Balance(p.available_delta, p.reserved_delta), kind


def test_a_posting_must_move_a_positive_amount() -> None:
    with pytest.raises(ValueError):
        posting("grant", "u1", 0)


def test_reserving_more_than_available_is_refused_with_what_is_available() -> None:
    with pytest.raises(InsufficientCredits) as refused:
        posting("reserve", "u1", 11).applied_to(Balance(available=10))

    assert refused.value.available == 10
    assert refused.value.requested == 11


def test_all_accounts_sum_to_zero_and_issued_mirrors_the_grants() -> None:
    entries = [
        entry_of(posting("grant", "a", 100)),
        entry_of(posting("reserve", "a", 40)),
        entry_of(posting("capture", "a", 30)),
        entry_of(posting("release", "a", 10)),
        entry_of(posting("refund", "a", 5)),
        entry_of(posting("grant", "b", 3)),
    ]

    totals = account_balances(entries)

    assert sum(totals.values()) == 0
    assert totals[SYSTEM_ISSUED] == -103
    assert totals[SYSTEM_REVENUE] == 25
    assert balances_from_entries(entries) == {
        "a": Balance(available=75, reserved=0),
        "b": Balance(available=3, reserved=0),
    }


def test_user_ids_containing_colons_keep_their_own_accounts() -> None:
    entries = [
        entry_of(posting("grant", "tenant:7", 9)),
        entry_of(posting("reserve", "tenant:7", 4)),
    ]

    assert balances_from_entries(entries) == {"tenant:7": Balance(available=5, reserved=4)}


# --- any sequence keeps the invariant --------------------------------------------------------

operations = st.lists(
    st.tuples(
        st.sampled_from(["grant", "reserve", "capture", "release"]),
        st.integers(min_value=0, max_value=4),  # order number
        st.integers(min_value=1, max_value=60),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_any_sequence_keeps_balances_non_negative_and_equal_to_the_ledger(
    ops: list[tuple[str, int, int]],
) -> None:
    """Mirrors ledger.py: reserve at most once per order, capture/release only what is held."""
    balance = Balance()
    held: dict[int, int] = {}  # order -> credits still reserved
    closed: set[int] = set()
    entries: list[Entry] = []
    granted = captured = 0

    def post(p: Posting) -> None:
        nonlocal balance
        balance = p.applied_to(balance)
        entries.append(entry_of(p))

    for kind, order, amount in ops:
        if kind == "grant":
            post(posting("grant", "u", amount))
            granted += amount
        elif kind == "reserve" and order not in held and order not in closed:
            try:
                post(posting("reserve", "u", amount))
            except InsufficientCredits:
                continue
            held[order] = amount
        elif kind == "capture" and order in held:
            reserved = held.pop(order)
            take, free = split_capture(reserved, min(amount, reserved))
            post(posting("capture", "u", take))
            captured += take
            if free:
                post(posting("release", "u", free))
            closed.add(order)
        elif kind == "release" and order in held:
            post(posting("release", "u", held.pop(order)))
            closed.add(order)

        assert balance.available >= 0 and balance.reserved >= 0
        assert balances_from_entries(entries).get("u", Balance()) == balance
        assert balance.available + balance.reserved == granted - captured
        assert balance.reserved == sum(held.values())


# --- capture, seeds, Checkout parameters -----------------------------------------------------


def test_capturing_less_than_reserved_frees_the_rest() -> None:
    assert split_capture(10, 10) == (10, 0)
    assert split_capture(10, 4) == (4, 6)
    with pytest.raises(CaptureExceedsReservation):
        split_capture(10, 11)


def test_seed_credits_parse_to_one_amount_per_user() -> None:
    assert parse_seed_credits("") == {}
    assert parse_seed_credits(" demo-shopper=500, alice=100 ,") == {
        "demo-shopper": 500,
        "alice": 100,
    }


@pytest.mark.parametrize("spec", ["alice", "alice=", "=5", "alice=-1", "alice=0", "a=1,a=2", "a=x"])
def test_malformed_seed_credits_are_refused(spec: str) -> None:
    with pytest.raises(InvalidSeed):
        parse_seed_credits(spec)


NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_a_deadline_inside_stripes_window_is_kept() -> None:
    assert checkout_expiry(NOW + timedelta(hours=2), sent_at=NOW, now=NOW) == NOW + timedelta(
        hours=2
    )


def test_a_deadline_outside_stripes_window_is_moved_inside_it() -> None:
    soon = checkout_expiry(NOW + timedelta(minutes=5), sent_at=NOW, now=NOW)
    late = checkout_expiry(NOW + timedelta(days=3), sent_at=NOW, now=NOW)

    assert timedelta(minutes=30) < soon - NOW <= timedelta(minutes=35)
    assert timedelta(hours=23, minutes=55) <= late - NOW < timedelta(hours=24)


def test_a_redelivery_minutes_later_asks_stripe_for_the_same_expiry() -> None:
    # Before: the window was reckoned from each delivery, so a redelivery after a Stripe
    # timeout sent another expires_at under the same idempotency key (Stripe: 400).
    requested = NOW + timedelta(minutes=5)  # moved into Stripe's window: the clamp applies
    first = checkout_expiry(requested, sent_at=NOW, now=NOW)
    again = checkout_expiry(requested, sent_at=NOW, now=NOW + timedelta(seconds=90))
    assert first == again


def test_a_command_delivered_after_most_of_its_window_cannot_open_a_session() -> None:
    with pytest.raises(PaymentWindowPassed):
        checkout_expiry(NOW + timedelta(hours=1), sent_at=NOW, now=NOW + timedelta(minutes=45))


def test_checkout_urls_get_the_order_id_and_keep_stripes_placeholder() -> None:
    url = checkout_url("http://shop/ok?o={ORDER_ID}&s={CHECKOUT_SESSION_ID}", order_id="o-1")

    assert url == "http://shop/ok?o=o-1&s={CHECKOUT_SESSION_ID}"


def test_lines_total_is_quantity_times_unit_amount() -> None:
    @dataclass
    class Line:
        quantity: int
        unit_amount: int

    assert lines_total([Line(2, 150), Line(1, 99)]) == 399
