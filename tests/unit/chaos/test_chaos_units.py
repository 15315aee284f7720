"""What became of every unit bought (invariants 11-14) on hand-built snapshots: each rule holds in
a world where the card order's units were delivered or refunded as they should be, and names the
order line when one unit is delivered and refunded, paid and neither, or paid another sum."""

from __future__ import annotations

import dataclasses

from chaos.invariants import check_all
from chaos.snapshot import Snapshot
from tests.support.chaos import (
    CARD,
    CREDITS,
    USER,
    a_server_plan_of_three_with_one_failed,
    assert_fails,
    by_id,
    change,
    consistent,
    result,
)

CARD_JOB = f"job-{CARD}"


def card_ends(s: Snapshot, status: str) -> Snapshot:
    """The card order (a server and a credit pack, 3000 paid) ends `status` instead."""
    return dataclasses.replace(
        s,
        orders=change(s.orders, by_id("id", CARD), status=status),
        sagas=change(s.sagas, by_id("id", CARD), state={"status": status, "job_id": CARD_JOB}),
        order_history=change(
            s.order_history,
            lambda h: h["order_id"] == CARD and h["status"] == "partially_completed",
            status=status,
        ),
    )


def card_refunded(s: Snapshot, key: str, amount: int = 3000) -> Snapshot:
    """The card order's whole charge given back under `key`, at Stripe and in payments."""
    return dataclasses.replace(
        s,
        refunds=change(s.refunds, by_id("order_id", CARD), refund_key=key, amount=amount),
        sim_refunds=change(s.sim_refunds, by_id("order_id", CARD), refund_key=key, amount=amount),
        payment_sessions=change(
            s.payment_sessions, by_id("order_id", CARD), amount_refunded=amount
        ),
    )


def card_not_delivered(s: Snapshot) -> Snapshot:
    """The card order's job cancelled before it ran: nothing built, no credits granted."""
    return dataclasses.replace(
        s,
        jobs=change(s.jobs, by_id("order_id", CARD), status="cancelled"),
        job_items=change(s.job_items, by_id("job_id", CARD_JOB), status="pending"),
        ledger=tuple(e for e in s.ledger if e["reference"] != f"grant:{CARD}:2"),
        accounts=change(s.accounts, by_id("user_id", USER), available=600),
    )


def card_delivered(s: Snapshot) -> Snapshot:
    """Provisioning delivered both of the card order's lines (the server and the credit pack)."""
    return dataclasses.replace(
        s,
        jobs=change(s.jobs, by_id("order_id", CARD), status="done"),
        job_items=change(s.job_items, by_id("job_id", CARD_JOB), status="delivered"),
    )


def stripe_took(s: Snapshot, amount: int, currency: str = "eur") -> Snapshot:
    """Stripe charged `amount` for the card order (payments recorded what Stripe reported)."""
    return dataclasses.replace(
        s,
        sim_sessions=change(
            s.sim_sessions,
            by_id("id", "cs_card"),
            amount_total=amount,
            amount_received=amount,
            currency=currency,
        ),
        payment_sessions=change(s.payment_sessions, by_id("order_id", CARD), amount_total=amount),
    )


def passes_everything(s: Snapshot) -> None:
    assert {r.name: r.offenders for r in check_all(s) if not r.passed} == {}


# --- 11 units delivered = bought - refunded --------------------------------------------------


def test_one_failed_server_of_three_refunds_a_third_and_every_invariant_holds() -> None:
    passes_everything(a_server_plan_of_three_with_one_failed())


def test_a_whole_line_refunded_for_one_failed_unit_fails() -> None:
    s = a_server_plan_of_three_with_one_failed()
    s = dataclasses.replace(
        s,
        refunds=change(s.refunds, by_id("order_id", CARD), refund_key="failed-lines-1"),
    )
    assert_fails(s, 11, f"order {CARD} line 1: 2 of 3 units delivered, 3 refunded")


def test_servers_built_that_the_line_does_not_count_as_delivered_fail() -> None:
    s = a_server_plan_of_three_with_one_failed()
    s = dataclasses.replace(s, job_units=change(s.job_units, by_id("unit_no", 3),
                                                status="delivered"))  # fmt: skip
    assert_fails(s, 11, f"order {CARD} line 1: 3 units built for 2 delivered")


def test_a_refunded_order_counts_its_units_too() -> None:
    refunded = card_refunded(card_ends(consistent(), "refunded"), "failed-lines-1-2")
    passes_everything(card_not_delivered(refunded))
    s = card_delivered(refunded)
    assert_fails(s, 11, f"order {CARD} line 2: 1 of 1 units delivered, 1 refunded (refunded)")


def test_a_refund_that_failed_at_stripe_gives_no_unit_back() -> None:
    s = consistent()
    s = dataclasses.replace(s, refunds=change(s.refunds, by_id("order_id", CARD), status="failed"))
    assert_fails(s, 11, f"order {CARD} line 1: 0 of 1 units delivered, 0 refunded")


# --- 12 no paid unit without delivery or refund ----------------------------------------------


def test_an_order_cancelled_with_the_money_kept_fails() -> None:
    s = card_not_delivered(card_ends(consistent(), "cancelled"))
    s = dataclasses.replace(
        s,
        refunds=(),
        sim_refunds=(),
        payment_sessions=change(s.payment_sessions, by_id("order_id", CARD), amount_refunded=0),
    )
    found = assert_fails(
        s,
        12,
        f"order {CARD} line 1: 1 of 1 units paid with money, neither delivered nor refunded "
        "(cancelled)",
    )
    assert len(found.offenders) == 2  # the server and the credit pack


def test_a_late_payment_to_a_cancelled_order_refunded_in_full_settles_every_unit() -> None:
    s = card_not_delivered(card_refunded(card_ends(consistent(), "refunded"), "late-payment"))
    passes_everything(s)


def test_a_failed_unit_left_unrefunded_fails() -> None:
    s = a_server_plan_of_three_with_one_failed()
    s = dataclasses.replace(
        s,
        refunds=(),
        sim_refunds=(),
        payment_sessions=change(s.payment_sessions, by_id("order_id", CARD), amount_refunded=0),
    )
    assert_fails(s, 12, f"order {CARD} line 1: 1 of 3 units paid with money, neither")


def test_credits_captured_for_goods_never_delivered_nor_refunded_fail() -> None:
    s = consistent()
    s = dataclasses.replace(
        s,
        job_items=change(s.job_items, by_id("job_id", f"job-{CREDITS}"), status="pending"),
    )
    assert_fails(s, 12, f"order {CREDITS} line 1: 1 of 1 units paid with credits, neither")


# --- 13 no delivered unit refunded as undelivered --------------------------------------------


def test_goods_delivered_and_refunded_in_full_fail() -> None:
    """The saga gave up on a silent provisioning and refunded everything; provisioning, back,
    delivered the job anyway."""
    s = card_delivered(card_refunded(card_ends(consistent(), "refunded"), "failed-lines-1-2"))
    found = assert_fails(
        s, 13, f"order {CARD} line 1: 1 of 1 units delivered, 1 refunded as undelivered (refunded)"
    )
    assert len(found.offenders) == 2
    assert result(s, 12).passed  # every unit is delivered or refunded: both, which is the bug


def test_a_delivered_server_among_the_refunded_units_fails() -> None:
    s = a_server_plan_of_three_with_one_failed()
    s = dataclasses.replace(
        s,
        refunds=change(s.refunds, by_id("order_id", CARD), refund_key="failed-lines-1x2"),
        sim_refunds=change(s.sim_refunds, by_id("order_id", CARD), refund_key="failed-lines-1x2"),
    )
    assert_fails(s, 13, f"order {CARD} line 1: 2 of 3 units delivered, 2 refunded as undelivered")


def test_a_refund_of_credits_for_a_delivered_line_fails() -> None:
    s = consistent()
    refund = {**s.ledger[2], "id": 7, "kind": "refund", "amount": 400,
              "reference": f"refund:{CREDITS}:failed-lines-1",
              "debit_account": "system:revenue", "credit_account": f"user:{USER}:available"}  # fmt: skip
    s = dataclasses.replace(
        s,
        ledger=(*s.ledger, refund),
        accounts=change(s.accounts, by_id("user_id", USER), available=1100),
        reservations=change(s.reservations, by_id("order_id", CREDITS), refunded=400),
    )
    assert_fails(s, 13, f"order {CREDITS} line 1: 1 of 1 units delivered, 1 refunded")


# --- 14 amount paid = order total ------------------------------------------------------------


def test_stripe_taking_another_sum_for_a_fulfilled_order_fails() -> None:
    s = stripe_took(consistent(), 2900)
    assert_fails(
        s,
        14,
        f"order {CARD}: Stripe took 2900 EUR of 3000 EUR, gave back 2000, order "
        "partially_completed",
    )


def test_another_currency_fails_even_for_the_same_sum() -> None:
    assert_fails(stripe_took(consistent(), 3000, "usd"), 14, "Stripe took 3000 USD of 3000 EUR")


def test_an_amount_mismatch_refunded_in_full_holds() -> None:
    s = card_ends(stripe_took(consistent(), 2900), "refunded")
    passes_everything(card_not_delivered(card_refunded(s, "amount-mismatch", 2900)))


def test_an_amount_mismatch_kept_in_part_fails() -> None:
    s = card_ends(stripe_took(consistent(), 2900), "refunded")
    s = card_not_delivered(card_refunded(s, "amount-mismatch", 2800))
    assert_fails(s, 14, f"order {CARD}: Stripe took 2900 EUR of 3000 EUR, gave back 2800")


def test_an_order_whose_totals_are_not_its_lines_nor_what_was_paid_fails() -> None:
    s = consistent()
    s = dataclasses.replace(
        s, orders=change(s.orders, by_id("id", CREDITS), money_total=1000, credits_total=0)
    )
    found = assert_fails(s, 14, f"order {CREDITS}: totals 1000 EUR/0 credits, lines 0/400")
    assert any("Stripe took 0 - of 1000 EUR" in o for o in found.offenders)
    assert any("captured 400 of 0 credits" in o for o in found.offenders)


def test_credits_captured_short_of_the_total_fail() -> None:
    s = consistent()
    s = dataclasses.replace(
        s,
        ledger=change(s.ledger, by_id("reference", f"capture:{CREDITS}"), amount=300),
        reservations=change(s.reservations, by_id("order_id", CREDITS), captured=300),
    )
    assert_fails(s, 14, f"order {CREDITS}: captured 300 of 400 credits, completed")
