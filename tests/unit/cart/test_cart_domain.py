"""Pricing a cart: server-side totals, one payment method per line, and the cart's refusals."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.cart import domain
from services.cart.domain import LineItem
from shared.limits import MAX_LINE_TOTAL, MAX_ORDER_TOTAL, MAX_QUANTITY, MAX_UNIT_PRICE
from tests.support.strategies import line_items

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
PKG = LineItem("pkg-10", "session_package", "10 coaching sessions", 2, 5000, "EUR", 400, 10)
VPS = LineItem("vps-small", "server_plan", "VPS small (1 month)", 1, 1500, "EUR", 120, 1)
CREDITS = LineItem("credits-100", "credit_pack", "100 credits", 3, 1000, "EUR", None, 100)


def test_with_credits_items_with_a_credit_price_are_paid_in_credits_the_rest_in_money() -> None:
    priced = domain.price_checkout([PKG, VPS, CREDITS], use_credits=True, now=NOW)

    assert [(line.line_no, line.item_id, line.paid_with) for line in priced.lines] == [
        (1, "pkg-10", "credits"),
        (2, "vps-small", "credits"),
        (3, "credits-100", "money"),
    ]
    assert priced.totals == domain.Totals(
        item_count=6,
        units_total=2 * 10 + 1 + 3 * 100,
        money_total=3 * 1000,
        credits_total=2 * 400 + 120,
        currency="EUR",
    )


def test_without_credits_everything_is_paid_in_money() -> None:
    priced = domain.price_checkout([PKG, VPS, CREDITS], use_credits=False, now=NOW)

    assert {line.paid_with for line in priced.lines} == {"money"}
    assert priced.totals.money_total == 2 * 5000 + 1500 + 3 * 1000
    assert priced.totals.credits_total == 0


def test_lines_carry_the_catalogue_prices_and_units() -> None:
    (line,) = domain.price_checkout([PKG], use_credits=True, now=NOW).lines

    assert (line.unit_price, line.unit_credits, line.units_per_item, line.quantity) == (
        5000,
        400,
        10,
        2,
    )
    assert (line.kind, line.name) == ("session_package", "10 coaching sessions")


def test_an_empty_cart_cannot_be_checked_out() -> None:
    with pytest.raises(domain.EmptyCart):
        domain.price_checkout([], use_credits=True, now=NOW)


def test_an_inactive_item_blocks_the_checkout_and_names_the_item() -> None:
    with pytest.raises(domain.ItemUnavailable) as raised:
        domain.price_checkout([PKG, replace(VPS, active=False)], use_credits=True, now=NOW)
    assert raised.value.item_id == "vps-small"
    assert raised.value.code == "item_unavailable"


def test_an_item_is_on_sale_only_inside_its_window_and_while_active() -> None:
    window = replace(VPS, available_from=NOW - HOUR, available_until=NOW + HOUR)

    assert domain.is_available(VPS, NOW)  # no bounds
    assert domain.is_available(window, NOW)
    assert domain.is_available(window, NOW - HOUR)  # from is inclusive
    assert not domain.is_available(window, NOW + HOUR)  # until is exclusive
    assert not domain.is_available(window, NOW - 2 * HOUR)
    assert not domain.is_available(replace(window, active=False), NOW)
    assert domain.is_available(replace(VPS, available_until=NOW + HOUR), NOW)
    assert not domain.is_available(replace(VPS, available_from=NOW + HOUR), NOW)


def test_an_item_whose_sale_ended_blocks_the_checkout() -> None:
    ended = replace(VPS, available_until=NOW)

    with pytest.raises(domain.ItemUnavailable) as raised:
        domain.price_checkout([PKG, ended], use_credits=True, now=NOW)
    assert raised.value.item_id == "vps-small"
    assert (
        domain.price_checkout([PKG, ended], use_credits=True, now=NOW - HOUR).totals.item_count == 3
    )


def test_lines_in_two_currencies_are_refused() -> None:
    with pytest.raises(domain.MixedCurrencies):
        domain.price_checkout([PKG, replace(VPS, currency="USD")], use_credits=True, now=NOW)


@pytest.mark.parametrize("quantity", [0, -1, 100, 10**9])
def test_quantities_outside_1_to_99_are_refused(quantity: int) -> None:
    with pytest.raises(domain.QuantityOutOfRange):
        domain.check_quantity(quantity)
    with pytest.raises(domain.QuantityOutOfRange):
        domain.price_checkout([replace(PKG, quantity=quantity)], use_credits=True, now=NOW)


@pytest.mark.parametrize("quantity", [1, 99])
def test_quantity_bounds_are_accepted(quantity: int) -> None:
    assert domain.check_quantity(quantity) == quantity


def test_only_an_open_cart_can_change() -> None:
    domain.ensure_open("open")
    for status in ("checking_out", "checked_out"):
        with pytest.raises(domain.CartNotOpen):
            domain.ensure_open(status)


def test_an_empty_cart_is_priced_at_zero_in_its_own_currency() -> None:
    priced = domain.price_lines([], use_credits=True, currency="EUR")
    assert priced.lines == ()
    assert priced.totals == domain.Totals(0, 0, 0, 0, "EUR")


def test_request_hash_tells_a_retry_from_a_different_request() -> None:
    same = domain.request_hash("cart-1", use_credits=True)
    assert same == domain.request_hash("cart-1", use_credits=True)
    assert same != domain.request_hash("cart-1", use_credits=False)
    assert same != domain.request_hash("cart-2", use_credits=True)
    # The fingerprint of a request without a session is what it was before sessions existed.
    # (stored with checkouts already made: a retry of one must still be recognised).
    assert same == "7fe0732f457c8b9b2f3dede068a5d04e0969ff5678cdc8771c75fe0b0532ff17"
    with_session = domain.request_hash("cart-1", use_credits=None, session_id="s-1")
    assert with_session != domain.request_hash("cart-1", use_credits=None, session_id="s-2")
    assert with_session != domain.request_hash("cart-1", use_credits=True, session_id="s-1")


@given(items=st.lists(line_items, min_size=1, max_size=12), use_credits=st.booleans())
def test_totals_are_the_sum_of_the_lines_and_each_line_is_paid_one_way(
    items: list[LineItem], use_credits: bool
) -> None:
    priced = domain.price_checkout(items, use_credits=use_credits, now=NOW)
    totals = priced.totals

    assert [line.line_no for line in priced.lines] == list(range(1, len(items) + 1))
    assert totals.money_total == sum(line.money for line in priced.lines)
    assert totals.credits_total == sum(line.credits for line in priced.lines)
    assert totals.item_count == sum(item.quantity for item in items)
    assert totals.units_total == sum(item.units_per_item * item.quantity for item in items)
    for item, line in zip(items, priced.lines, strict=True):
        assert line.item_id == item.item_id
        if line.paid_with == "credits":
            assert use_credits and item.credit_price is not None
            assert line.money == 0
            assert line.credits == item.credit_price * item.quantity
        else:
            assert line.paid_with == "money"
            assert not (use_credits and item.credit_price is not None)
            assert line.credits == 0
            assert line.money == item.unit_price * item.quantity


def test_a_checkout_whose_money_or_credits_pass_the_order_total_bound_is_refused() -> None:
    biggest = LineItem(
        "big", "server_plan", "big", MAX_QUANTITY, MAX_UNIT_PRICE, "EUR", MAX_UNIT_PRICE, 1
    )
    fits = MAX_ORDER_TOTAL // MAX_LINE_TOTAL  # whole lines of the biggest size within the bound
    cart = [replace(biggest, item_id=f"big-{n}") for n in range(fits)]
    for use_credits in (False, True):
        priced = domain.price_checkout(cart, use_credits=use_credits, now=NOW)
        assert max(priced.totals.money_total, priced.totals.credits_total) == fits * MAX_LINE_TOTAL
        with pytest.raises(domain.OrderTotalTooLarge) as refused:
            domain.price_checkout([*cart, biggest], use_credits=use_credits, now=NOW)
        assert refused.value.code == "order_total_too_large"
