"""The checkout-session lifecycle rules: when a session can be checked out, when it can be
recovered, and what "the cart still matches" means — with the first reason first."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.cart import domain
from services.cart.checkout_sessions import rules
from services.cart.checkout_sessions.rules import CartFacts, SessionFacts
from services.cart.domain import LineItem
from tests.support.strategies import line_items

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
PKG = LineItem("pkg-10", "session_package", "10 coaching sessions", 2, 5000, "EUR", 400, 10)
VPS = LineItem("vps-small", "server_plan", "VPS small (1 month)", 1, 1500, "EUR", 120, 1)
CREDITS = LineItem("credits-100", "credit_pack", "100 credits", 1, 1000, "EUR", None, 100)
ITEMS = (PKG, VPS, CREDITS)


def cart(*items: LineItem, status: str = "open") -> CartFacts:
    return CartFacts(status=status, currency="EUR", items=items)


def issued_for(c: CartFacts, *, use_credits: bool = True, **changes: Any) -> SessionFacts:
    """A session as `sessions.issue` would have stored it for cart `c` at NOW."""
    priced = domain.price_checkout(c.items, use_credits=use_credits, now=NOW)
    session = SessionFacts(
        status="active",
        expires_at=rules.expiry(NOW, 86400),
        content_hash=rules.content_hash(priced),
        use_credits=use_credits,
    )
    return replace(session, **changes)


def code_of(problem: domain.CartError | None) -> str | None:
    return problem.code if problem is not None else None


# --- expiry ----------------------------------------------------------------------------------


def test_a_session_expires_ttl_seconds_after_it_was_issued() -> None:
    session = issued_for(cart(*ITEMS))

    assert session.expires_at == NOW + DAY
    assert rules.effective_status(session, NOW + DAY - timedelta(microseconds=1)) == "active"
    assert rules.effective_status(session, NOW + DAY) == "expired"


@pytest.mark.parametrize("status", ["completed", "invalidated", "expired"])
def test_only_active_sessions_turn_expired_with_time(status: str) -> None:
    session = issued_for(cart(*ITEMS), status=status)

    assert rules.effective_status(session, NOW + 2 * DAY) == status


# --- checkout --------------------------------------------------------------------------------


def test_an_active_session_of_an_unchanged_cart_can_be_checked_out() -> None:
    c = cart(*ITEMS)

    assert rules.checkout_problem(issued_for(c), c, NOW + DAY / 2) is None


@pytest.mark.parametrize(
    ("session_changes", "cart_now", "code"),
    [
        ({"status": "completed"}, cart(*ITEMS, status="checking_out"), "session_not_active"),
        ({"status": "invalidated"}, cart(*ITEMS), "session_invalidated"),
        ({"status": "expired"}, cart(*ITEMS), "session_expired"),
        ({"expires_at": NOW}, cart(*ITEMS), "session_expired"),
        ({}, cart(*ITEMS, status="checking_out"), "cart_not_open"),
        ({}, cart(), "cart_empty"),
        ({}, cart(PKG, replace(VPS, active=False), CREDITS), "item_unavailable"),
        ({}, cart(PKG, replace(VPS, available_until=NOW), CREDITS), "item_unavailable"),
        ({}, cart(replace(PKG, quantity=3), VPS, CREDITS), "cart_changed"),
        ({}, cart(PKG, VPS), "cart_changed"),
        ({}, cart(replace(PKG, unit_price=4000), VPS, CREDITS), "cart_changed"),
        ({}, cart(replace(PKG, credit_price=300), VPS, CREDITS), "cart_changed"),
    ],
)
def test_why_a_session_cannot_be_checked_out(
    session_changes: dict[str, Any], cart_now: CartFacts, code: str
) -> None:
    session = issued_for(cart(*ITEMS), **session_changes)

    assert code_of(rules.checkout_problem(session, cart_now, NOW)) == code


def test_the_session_state_is_reported_before_the_cart_state() -> None:
    # A second checkout with a used session: the cart is frozen too, but "used" is the reason.
    used = issued_for(cart(*ITEMS), status="completed")
    expired_and_changed = issued_for(cart(*ITEMS), status="expired")

    assert code_of(rules.checkout_problem(used, cart(status="checked_out"), NOW)) == (
        "session_not_active"
    )
    assert code_of(rules.checkout_problem(expired_and_changed, cart(PKG), NOW)) == (
        "session_expired"
    )


def test_an_invalidated_session_names_its_successor() -> None:
    session = issued_for(cart(*ITEMS), status="invalidated", replaced_by="s-2")

    problem = rules.checkout_problem(session, cart(*ITEMS), NOW)

    assert isinstance(problem, rules.SessionInvalidated)
    assert problem.replaced_by == "s-2"


def test_renaming_an_item_does_not_change_what_the_shopper_pays() -> None:
    session = issued_for(cart(*ITEMS))

    assert (
        rules.checkout_problem(session, cart(replace(PKG, name="Ten sessions"), VPS, CREDITS), NOW)
        is None
    )


def test_the_payment_choice_is_part_of_the_content() -> None:
    with_credits = issued_for(cart(*ITEMS), use_credits=True)
    money_only = issued_for(cart(*ITEMS), use_credits=False)

    assert with_credits.content_hash != money_only.content_hash
    # A cart with no credit-priced item costs the same either way.
    only_money = cart(CREDITS)
    assert issued_for(only_money, use_credits=True).content_hash == (
        issued_for(only_money, use_credits=False).content_hash
    )


# --- recovery --------------------------------------------------------------------------------


def test_an_expired_session_of_an_unchanged_cart_can_be_recovered() -> None:
    c = cart(*ITEMS)

    assert rules.recovery_problem(issued_for(c, status="expired"), c, NOW) is None
    assert rules.recovery_problem(issued_for(c), c, NOW + 2 * DAY) is None  # not marked yet


@pytest.mark.parametrize(
    ("session_changes", "cart_now", "code"),
    [
        ({}, cart(*ITEMS), "session_not_expired"),
        ({"status": "completed"}, cart(*ITEMS), "session_not_active"),
        ({"status": "invalidated"}, cart(*ITEMS), "session_invalidated"),
        ({"status": "expired"}, cart(replace(PKG, quantity=1), VPS, CREDITS), "cart_changed"),
        ({"status": "expired"}, cart(*ITEMS, status="checked_out"), "cart_not_open"),
        ({"status": "expired"}, cart(PKG, replace(VPS, active=False), CREDITS), "item_unavailable"),
        ({"status": "expired"}, cart(), "cart_empty"),
    ],
)
def test_why_a_session_cannot_be_recovered(
    session_changes: dict[str, Any], cart_now: CartFacts, code: str
) -> None:
    session = issued_for(cart(*ITEMS), **session_changes)

    assert code_of(rules.recovery_problem(session, cart_now, NOW)) == code


# --- reuse and matching ----------------------------------------------------------------------


def test_the_active_session_is_reused_only_for_the_same_content_and_choice() -> None:
    c = cart(*ITEMS)
    session = issued_for(c)
    priced = domain.price_checkout(c.items, use_credits=True, now=NOW)
    changed = domain.price_checkout([PKG], use_credits=True, now=NOW)

    assert rules.reusable(session, priced=priced, use_credits=True, now=NOW)
    assert not rules.reusable(None, priced=priced, use_credits=True, now=NOW)
    assert not rules.reusable(session, priced=changed, use_credits=True, now=NOW)
    assert not rules.reusable(session, priced=priced, use_credits=False, now=NOW)
    assert not rules.reusable(session, priced=priced, use_credits=True, now=NOW + DAY)
    assert not rules.reusable(
        replace(session, status="invalidated"), priced=priced, use_credits=True, now=NOW
    )


def test_a_cart_that_cannot_be_priced_has_no_current_hash() -> None:
    mixed = cart(PKG, replace(VPS, currency="USD"))

    assert rules.current_hash(mixed, use_credits=True) is None
    assert (
        rules.current_hash(cart(*ITEMS), use_credits=True) == issued_for(cart(*ITEMS)).content_hash
    )


distinct_items = st.lists(line_items, min_size=1, max_size=8, unique_by=lambda i: i.item_id)


@given(items=distinct_items, use_credits=st.booleans(), data=st.data())
def test_the_snapshot_is_what_checkout_sends_and_line_order_does_not_matter(
    items: list[LineItem], use_credits: bool, data: st.DataObject
) -> None:
    priced = domain.price_checkout(items, use_credits=use_credits, now=NOW)
    shuffled = data.draw(st.permutations(items))

    assert rules.priced_from(rules.snapshot_of(priced)) == priced
    assert rules.content_hash(priced) == rules.content_hash(
        domain.price_checkout(shuffled, use_credits=use_credits, now=NOW)
    )
    bumped = [replace(items[0], quantity=items[0].quantity % 99 + 1), *items[1:]]
    assert rules.content_hash(priced) != rules.content_hash(
        domain.price_checkout(bumped, use_credits=use_credits, now=NOW)
    )
