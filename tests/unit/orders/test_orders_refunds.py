"""The rounding rule for refunding the failed lines of a paid order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.orders.saga.refunds import share_of_failed
from shared.messages.contracts import CheckoutLine


def money_line(n: int, price: int, qty: int = 1) -> CheckoutLine:
    return CheckoutLine(
        line_no=n,
        item_id=f"i{n}",
        kind="server_plan",
        name=f"n{n}",
        quantity=qty,
        unit_price=price,
        paid_with="money",
    )


def credit_line(n: int, credits: int, qty: int = 1) -> CheckoutLine:
    return CheckoutLine(
        line_no=n,
        item_id=f"i{n}",
        kind="session_package",
        name=f"n{n}",
        quantity=qty,
        unit_price=999,
        unit_credits=credits,
        paid_with="credits",
    )


def test_a_failed_line_refunds_exactly_its_own_price_in_the_way_it_was_paid() -> None:
    lines = [money_line(1, 1500, qty=2), credit_line(2, 120, qty=3), money_line(3, 1000)]
    share = share_of_failed(lines, [1, 2], amount_paid=4000)
    assert (share.money, share.credits) == (3000, 360)


def test_rounding_floors_each_failed_line_and_all_failed_returns_the_whole_charge() -> None:
    # Charged 1000 for a list price of 1001 across three lines (say a discount of 1).
    lines = [money_line(1, 333), money_line(2, 333), money_line(3, 335)]
    assert share_of_failed(lines, [1], amount_paid=1000).money == 332  # floor(333 * 1000 / 1001)
    assert share_of_failed(lines, [1, 2], amount_paid=1000).money == 664
    assert share_of_failed(lines, [1, 2, 3], amount_paid=1000).money == 1000  # remainder included


def test_nothing_failed_refunds_nothing() -> None:
    assert share_of_failed([money_line(1, 500)], [], amount_paid=500).empty


@given(
    prices=st.lists(st.integers(min_value=0, max_value=100_000), min_size=1, max_size=8),
    discount=st.integers(min_value=0, max_value=50_000),
    failed=st.sets(st.integers(min_value=1, max_value=8)),
)
def test_a_refund_never_exceeds_the_charge_and_is_whole_when_everything_failed(
    prices: list[int], discount: int, failed: set[int]
) -> None:
    lines = [money_line(i + 1, p) for i, p in enumerate(prices)]
    total = sum(prices)
    paid = max(total - discount, 0)
    share = share_of_failed(lines, failed, amount_paid=paid)
    assert 0 <= share.money <= paid
    failed_money = {ln.line_no for ln in lines if ln.money > 0} & failed
    if failed_money and failed_money == {ln.line_no for ln in lines if ln.money > 0}:
        assert share.money == paid
    if paid == total:
        assert share.money == sum(ln.money for ln in lines if ln.line_no in failed)


def test_a_partly_failed_line_refunds_exactly_its_failed_units() -> None:
    lines = [money_line(1, 1500, qty=3), credit_line(2, 120, qty=4), money_line(3, 1000)]
    share = share_of_failed(lines, {1: 1, 2: 3}, amount_paid=5500)
    assert (share.money, share.credits) == (1500, 360)
    assert share.key == "failed-lines-1x1-2x3"
    # Every unit of every money line failed: the whole charge goes back, remainder included.
    assert share_of_failed(lines, {1: 3, 3: 1}, amount_paid=5400).money == 5400
    # Charged 5400 of a 5500 list price: one server of three is floor(1500 * 5400 / 5500).
    assert share_of_failed(lines, {1: 1}, amount_paid=5400).money == 1472


@given(
    lines=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=100_000),  # unit price
            st.integers(min_value=1, max_value=9),  # quantity
            st.integers(min_value=0, max_value=9),  # failed units (capped at the quantity)
            st.booleans(),  # paid with credits
        ),
        min_size=1,
        max_size=6,
    ),
    discount=st.integers(min_value=0, max_value=50_000),
)
def test_a_unit_refund_never_exceeds_what_was_paid_and_credits_are_exact(
    lines: list[tuple[int, int, int, bool]], discount: int
) -> None:
    checkout_lines = [
        credit_line(i + 1, price, qty) if credits else money_line(i + 1, price, qty)
        for i, (price, qty, _, credits) in enumerate(lines)
    ]
    failed = {i + 1: min(f, qty) for i, (_, qty, f, _) in enumerate(lines) if f}
    total = sum(ln.money for ln in checkout_lines)
    paid = max(total - discount, 0)
    share = share_of_failed(checkout_lines, failed, amount_paid=paid)
    assert 0 <= share.money <= paid
    assert share.credits == sum(
        (ln.unit_credits or 0) * failed.get(ln.line_no, 0) for ln in checkout_lines if ln.credits
    )
    # Never more than the failed units' list price, nor more than whole lines would refund.
    whole = share_of_failed(checkout_lines, list(failed), amount_paid=paid)
    assert share.money <= whole.money and share.credits <= whole.credits
    money_units = {ln.line_no: ln.quantity for ln in checkout_lines if ln.money > 0}
    if money_units and all(failed.get(n) == q for n, q in money_units.items()):
        assert share.money == paid
    elif paid == total:
        assert share.money == sum(
            ln.unit_price * failed.get(ln.line_no, 0) for ln in checkout_lines if ln.money
        )
