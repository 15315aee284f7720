"""The chaos run's invariant checks on hand-built snapshots: a consistent world passes every
check, and each check fails, naming the culprit, when one thing in that world is broken."""

from __future__ import annotations

import dataclasses

from chaos.invariants import check_all
from chaos.report import render, summary_counts
from tests.support.chaos import (
    CARD,
    CREDITS,
    GONE,
    USER,
    assert_fails,
    by_id,
    change,
    consistent,
    entry,
    result,
)


def test_a_consistent_world_passes_every_invariant() -> None:
    results = check_all(consistent())
    assert [r.name for r in results] == [
        "credits conserved",
        "no double charge",
        "no order without a job",
        "every saga terminal",
        "every paid order settled",
        "each effect at most once",
        "every message applied or dead-lettered",
        "no unpublished outbox row",
        "no cart frozen without a live saga",
        "Stripe and payments agree",
        "units delivered = bought - refunded",
        "no paid unit without delivery or refund",
        "no delivered unit refunded as undelivered",
        "amount paid = order total",
    ]
    assert [r.offenders for r in results] == [[]] * 14
    assert all(r.passed for r in results)


# --- 1 credits conserved ---------------------------------------------------------------------


def test_an_extra_ledger_entry_breaks_conservation_for_that_account() -> None:
    s = consistent()
    s = dataclasses.replace(s, ledger=(*s.ledger, entry(7, "grant", 5, None, "grant:api:2")))
    assert_fails(s, 1, f"account {USER}")


def test_a_cached_balance_the_ledger_does_not_explain_fails() -> None:
    s = consistent()
    s = dataclasses.replace(s, accounts=change(s.accounts, by_id("user_id", USER), available=699))
    assert_fails(s, 1, "cached 699/0 != ledger 700/0")


def test_a_ledger_that_spends_credits_before_they_exist_fails() -> None:
    s = consistent()
    first_grant = change(s.ledger, by_id("id", 1), id=99)  # the grant now comes last
    assert_fails(dataclasses.replace(s, ledger=first_grant), 1, "ledger goes negative")


def test_a_reservation_still_held_after_its_saga_ended_fails() -> None:
    s = consistent()
    s = dataclasses.replace(
        s,
        ledger=tuple(e for e in s.ledger if e["reference"] != f"release:{GONE}"),
        accounts=change(s.accounts, by_id("user_id", USER), available=600, reserved=100),
        reservations=change(s.reservations, by_id("order_id", GONE), status="reserved"),
    )
    found = assert_fails(s, 1, f"order {GONE}: 100 credits still held")
    assert len(found.offenders) == 1  # the account itself is consistent


# --- 2 no double charge ----------------------------------------------------------------------


def test_two_paid_stripe_sessions_for_one_order_fail() -> None:
    s = consistent()
    second = {**s.sim_sessions[0], "id": "cs_card_2", "payment_intent": "pi_2"}
    s = dataclasses.replace(s, sim_sessions=(*s.sim_sessions, second))
    assert_fails(s, 2, f"order {CARD}: 2 paid Stripe sessions")


def test_refunds_over_the_charge_fail_for_money_and_credits() -> None:
    s = consistent()
    s = dataclasses.replace(
        s,
        refunds=change(s.refunds, by_id("order_id", CARD), amount=3500),
        payment_sessions=change(s.payment_sessions, by_id("order_id", CARD), amount_refunded=3500),
        sim_refunds=change(s.sim_refunds, by_id("id", "re_1"), amount=3500),
        ledger=(*s.ledger, entry(7, "refund", 500, CREDITS, f"refund:{CREDITS}:k")),
    )
    found = assert_fails(s, 2, f"order {CARD}: payments refunded 3500 of 3000")
    assert any(f"order {CARD}: Stripe refunded 3500 of 3000" in o for o in found.offenders)
    assert any(f"order {CREDITS}: refunded 500 credits of 400" in o for o in found.offenders)


# --- 3 no order without a job ----------------------------------------------------------------


def test_a_paid_order_or_a_payment_session_without_a_job_fails() -> None:
    s = consistent()
    s = dataclasses.replace(s, jobs=tuple(j for j in s.jobs if j["order_id"] != CARD))
    found = assert_fails(s, 3, f"order {CARD}: partially_completed without a job")
    assert any("payment session cs_card without a job" in o for o in found.offenders)
    assert any("Stripe session cs_card without a job" in o for o in found.offenders)


# --- 4 every saga terminal -------------------------------------------------------------------


def test_a_saga_still_waiting_is_listed_with_its_step_and_status() -> None:
    s = consistent()
    stuck = {"id": GONE, "step": "compensating", "state": {"status": "compensating"}}
    s = dataclasses.replace(s, sagas=change(s.sagas, by_id("id", GONE), **stuck))
    assert_fails(s, 4, f"order {GONE}: step=compensating status=compensating")


def test_a_checkout_whose_saga_never_started_fails() -> None:
    s = consistent()
    s = dataclasses.replace(
        s, checkouts=(*s.checkouts, {"id": "lost", "cart_id": "cart-9", "status": "requested"})
    )
    assert_fails(s, 4, "order lost: checked out in cart, saga never started")


# --- 5 every paid order settled --------------------------------------------------------------


def test_a_partial_refund_that_does_not_match_the_failed_items_fails() -> None:
    s = consistent()
    s = dataclasses.replace(
        s,
        refunds=change(s.refunds, by_id("order_id", CARD), amount=1000),
        payment_sessions=change(s.payment_sessions, by_id("order_id", CARD), amount_refunded=1000),
    )
    assert_fails(
        s, 5, f"order {CARD}: partially_completed, refunded 1000 money/0 credits, expected 2000/0"
    )


def test_a_paid_order_that_ends_cancelled_keeps_money_and_fails() -> None:
    s = consistent()
    s = dataclasses.replace(s, orders=change(s.orders, by_id("id", CARD), status="cancelled"))
    assert_fails(s, 5, f"order {CARD}: paid but cancelled")


def test_a_refunded_order_must_give_back_the_whole_charge() -> None:
    s = consistent()
    s = dataclasses.replace(s, orders=change(s.orders, by_id("id", CARD), status="refunded"))
    assert_fails(s, 5, f"order {CARD}: refunded, refunded 2000 money/0 credits, expected 3000")


# --- 6 each effect at most once --------------------------------------------------------------


def test_two_jobs_or_two_captures_for_one_order_fail() -> None:
    s = consistent()
    s = dataclasses.replace(
        s,
        jobs=(*s.jobs, {"id": "job-dup", "order_id": CREDITS, "status": "done"}),
        ledger=(*s.ledger, entry(7, "capture", 1, CREDITS, f"capture:{CREDITS}:again")),
    )
    found = assert_fails(s, 6, f"{CREDITS}: 2 jobs")
    assert any(f"('{CREDITS}', 'capture'): 2 ledger entries" in o for o in found.offenders)


def test_a_message_applied_twice_by_one_service_or_a_lost_grant_fails() -> None:
    s = consistent()
    twice = {**s.inbox[0], "handler": "orders.other"}
    s = dataclasses.replace(
        s,
        inbox=(*s.inbox, twice),
        ledger=tuple(e for e in s.ledger if e["reference"] != f"grant:{CARD}:2"),
        accounts=change(s.accounts, by_id("user_id", USER), available=600),
    )
    found = assert_fails(s, 6, "('orders', 'm1'): 2 inbox rows")
    assert any(
        f"grant:{CARD}:2: delivered 100 credits, ledger granted None" in o for o in found.offenders
    )


def test_an_order_completed_twice_fails_unless_the_second_answers_the_carts_question() -> None:
    s = consistent()
    [completed] = [m for m in s.outbox if m["message_type"] == "orders.order_completed"]
    again = {**completed, "seq": 9, "message_id": "m9"}
    twice = dataclasses.replace(s, outbox=(*s.outbox, again))
    assert_fails(twice, 6, f"{CREDITS}: 2 OrderCompleted events")

    # The cart asked after the outcome; orders said it again: one completion, said twice.
    question = {
        "service": "orders",
        "message_id": "q1",
        "handler": "orders.handle",
        "message_type": "orders.inquire_order",
        "correlation_id": CREDITS,
    }
    answered = dataclasses.replace(
        s,
        outbox=(*s.outbox, {**again, "causation_id": "q1"}),
        inbox=(*s.inbox, question),
    )
    assert result(answered, 6).offenders == []


def test_two_stripe_refunds_for_one_refund_key_fail() -> None:
    s = consistent()
    s = dataclasses.replace(s, sim_refunds=(*s.sim_refunds, {**s.sim_refunds[0], "id": "re_2"}))
    assert_fails(s, 6, f"('{CARD}', 'failed-lines-1'): 2 Stripe refunds")


# --- 7 every message applied or dead-lettered ------------------------------------------------


def test_a_command_nobody_applied_or_dead_lettered_fails_with_its_message_id() -> None:
    s = consistent()
    s = dataclasses.replace(s, inbox=tuple(r for r in s.inbox if r["message_id"] != "m2"))
    assert_fails(s, 7, "orders->payments payments.reserve_credits m2")


def test_an_event_a_subscriber_missed_fails_and_a_reasonless_dead_letter_fails() -> None:
    s = consistent()
    s = dataclasses.replace(
        s,
        inbox=tuple(r for r in s.inbox if r["message_id"] != "m4"),
        dead_letters=change(s.dead_letters, by_id("message_id", "m7"), reason=""),
    )
    found = assert_fails(s, 7, "orders->cart orders.order_completed m4")
    assert any("m7: dead-lettered without a reason" in o for o in found.offenders)


# --- 8 no unpublished outbox row -------------------------------------------------------------


def test_an_unpublished_outbox_row_fails_with_its_message_id() -> None:
    s = consistent()
    s = dataclasses.replace(
        s, outbox=change(s.outbox, by_id("message_id", "m3"), published_at=None)
    )
    assert_fails(s, 8, "payments payments.credits_reserved m3")


# --- 9 no cart frozen without a live saga ----------------------------------------------------


def test_a_cart_frozen_after_its_saga_ended_fails() -> None:
    s = consistent()
    s = dataclasses.replace(
        s,
        carts=change(s.carts, by_id("id", "cart-3"), status="checking_out"),
        checkouts=change(s.checkouts, by_id("id", GONE), status="requested"),
    )
    found = assert_fails(s, 9, "cart cart-3: checking_out without a live saga")
    assert any(f"order {GONE}: saga ended, checkout still requested" in o for o in found.offenders)


def test_a_cart_frozen_for_a_live_saga_is_fine() -> None:
    s = consistent()
    s = dataclasses.replace(
        s,
        carts=change(s.carts, by_id("id", "cart-3"), status="checking_out"),
        sagas=change(s.sagas, by_id("id", GONE), step="awaiting_payment"),
    )
    assert result(s, 9).passed
    assert not result(s, 4).passed  # that saga is not over, though


# --- 10 Stripe and payments agree ------------------------------------------------------------


def test_a_payment_stripe_took_that_payments_does_not_know_fails() -> None:
    s = consistent()
    s = dataclasses.replace(
        s, payment_sessions=change(s.payment_sessions, by_id("order_id", CARD), status="open")
    )
    assert_fails(s, 10, f"order {CARD}: Stripe says complete, payments open")


def test_a_session_left_open_for_an_ended_saga_fails() -> None:
    s = consistent()
    s = dataclasses.replace(
        s,
        sim_sessions=change(s.sim_sessions, by_id("id", "cs_gone"), status="open"),
        payment_sessions=change(s.payment_sessions, by_id("order_id", GONE), status="open"),
    )
    assert_fails(s, 10, f"order {GONE}: Stripe session cs_gone left open, saga ended")


def test_a_refund_settled_at_stripe_but_pending_in_payments_or_an_unapplied_event_fails() -> None:
    s = consistent()
    s = dataclasses.replace(
        s,
        refunds=change(s.refunds, by_id("stripe_refund_id", "re_1"), status="pending"),
        stripe_events=change(s.stripe_events, by_id("event_id", "evt_1"), processed_at=None),
    )
    found = assert_fails(s, 10, "refund re_1 is succeeded at Stripe, pending in payments")
    assert any(
        "event evt_1 (checkout.session.completed) never applied" in o for o in found.offenders
    )


# --- the report ------------------------------------------------------------------------------


def test_the_report_shows_counts_verdicts_and_caps_offenders_but_counts_them_all() -> None:
    s = consistent()
    many = tuple(
        {**s.outbox[0], "message_id": f"x{i}", "seq": 100 + i, "published_at": None}
        for i in range(25)
    )
    s = dataclasses.replace(s, outbox=(*s.outbox, *many))
    results = check_all(s)
    summary = summary_counts(s)
    assert summary.orders_by_status == {"completed": 1, "partially_completed": 1, "cancelled": 1}
    assert summary.dlq_count == 1
    assert summary.redeliveries == 3
    text = render(
        results,
        checkouts_by_status=summary.orders_by_status,
        faults={"sigkill": 2},
        redeliveries=3,
        dlq_count=summary.dlq_count,
        quiescence_seconds=12.34,
    )
    assert "time to quiescence: 12.3 s" in text
    assert " 8. FAIL no unpublished outbox row" in text
    assert "25 offender(s):" in text and "… and 15 more" in text
    assert " 1. PASS credits conserved" in text
    assert text.rstrip().endswith("invariants FAILED")
