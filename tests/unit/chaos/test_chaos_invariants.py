"""The chaos run's invariant checks on hand-built snapshots: a consistent world passes every
check, and each check fails, naming the culprit, when one thing in that world is broken."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chaos.invariants import InvariantResult, check_all
from chaos.report import render, summary_counts
from chaos.snapshot import Row, Rows, Snapshot

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CREDITS = "order-credits"  # paid with credits, completed
CARD = "order-card"  # paid by card, one of two servers failed: partially completed
GONE = "order-gone"  # cancelled while awaiting payment: everything undone
USER = "u1"


def _line(order: str, no: int, kind: str, price: int, credits: int | None, paid: str) -> Row:
    return {
        "order_id": order,
        "line_no": no,
        "item_id": f"item-{no}",
        "kind": kind,
        "name": f"item {no}",
        "quantity": 1,
        "unit_price": price,
        "unit_credits": credits,
        "paid_with": paid,
        "result": None,
    }


def _entry(n: int, kind: str, amount: int, order: str | None, ref: str) -> Row:
    accounts = {
        "grant": ("system:issued", f"user:{USER}:available"),
        "reserve": (f"user:{USER}:available", f"user:{USER}:reserved"),
        "capture": (f"user:{USER}:reserved", "system:revenue"),
        "release": (f"user:{USER}:reserved", f"user:{USER}:available"),
        "refund": ("system:revenue", f"user:{USER}:available"),
    }[kind]
    return {
        "id": n,
        "user_id": USER,
        "kind": kind,
        "amount": amount,
        "debit_account": accounts[0],
        "credit_account": accounts[1],
        "order_id": order,
        "reference": ref,
    }


def _saga(order: str, status: str) -> Row:
    return {"id": order, "step": "done", "state": {"status": status, "job_id": f"job-{order}"}}


def _message(service: str, seq: int, mid: str, mtype: str, order: str, target: str | None) -> Row:
    return {
        "service": service,
        "seq": seq,
        "message_id": mid,
        "message_type": mtype,
        "correlation_id": order,
        "published_at": NOW,
        "kind": "command" if target else "event",
        "target": target,
    }


def _inbox(service: str, mid: str, mtype: str, order: str) -> Row:
    return {
        "service": service,
        "message_id": mid,
        "handler": f"{service}.handle",
        "message_type": mtype,
        "correlation_id": order,
    }


def consistent() -> Snapshot:
    outbox = (
        _message("cart", 1, "m1", "cart.checkout_requested", CREDITS, None),
        _message("orders", 1, "m2", "payments.reserve_credits", CREDITS, "payments"),
        _message("payments", 1, "m3", "payments.credits_reserved", CREDITS, None),
        _message("orders", 2, "m4", "orders.order_completed", CREDITS, None),
        _message("provisioning", 1, "m5", "payments.grant_credits", CARD, "payments"),
        _message("payments", 2, "m6", "payments.credits_granted", CARD, None),
        _message("orders", 3, "m7", "provisioning.cancel_job", GONE, "provisioning"),
    )
    inbox = (
        _inbox("orders", "m1", "cart.checkout_requested", CREDITS),
        _inbox("payments", "m2", "payments.reserve_credits", CREDITS),
        _inbox("orders", "m3", "payments.credits_reserved", CREDITS),
        _inbox("cart", "m4", "orders.order_completed", CREDITS),
        _inbox("payments", "m5", "payments.grant_credits", CARD),
        _inbox("provisioning", "m6", "payments.credits_granted", CARD),  # confirms the grant
    )
    return Snapshot(
        taken_at=NOW,
        orders=(
            {"id": CREDITS, "user_id": USER, "cart_id": "cart-1", "status": "completed",
             "money_total": 0, "credits_total": 400, "job_id": f"job-{CREDITS}"},
            {"id": CARD, "user_id": USER, "cart_id": "cart-2", "status": "partially_completed",
             "money_total": 3000, "credits_total": 0, "job_id": f"job-{CARD}"},
            {"id": GONE, "user_id": USER, "cart_id": "cart-3", "status": "cancelled",
             "money_total": 500, "credits_total": 100, "job_id": f"job-{GONE}"},
        ),
        order_lines=(
            _line(CREDITS, 1, "session_package", 1000, 400, "credits"),
            _line(CARD, 1, "server_plan", 2000, None, "money"),
            _line(CARD, 2, "credit_pack", 1000, None, "money"),
            _line(GONE, 1, "session_package", 1000, 100, "credits"),
            _line(GONE, 2, "server_plan", 500, None, "money"),
        ),
        order_history=tuple(
            {"seq": i, "order_id": order, "status": status, "reason": ""}
            for i, (order, status) in enumerate(
                [(CREDITS, "pending"), (CREDITS, "paid"), (CREDITS, "completed"),
                 (CARD, "pending"), (CARD, "paid"), (CARD, "partially_completed"),
                 (GONE, "pending"), (GONE, "compensating"), (GONE, "cancelled")]
            )
        ),
        sagas=(_saga(CREDITS, "completed"), _saga(CARD, "partially_completed"),
               _saga(GONE, "cancelled")),
        accounts=({"user_id": USER, "available": 600 + 100, "reserved": 0},),
        ledger=(
            _entry(1, "grant", 1000, None, "grant:api:1"),
            _entry(2, "reserve", 400, CREDITS, f"reserve:{CREDITS}"),
            _entry(3, "capture", 400, CREDITS, f"capture:{CREDITS}"),
            _entry(4, "grant", 100, CARD, f"grant:{CARD}:2"),
            _entry(5, "reserve", 100, GONE, f"reserve:{GONE}"),
            _entry(6, "release", 100, GONE, f"release:{GONE}"),
        ),
        reservations=(
            {"order_id": CREDITS, "user_id": USER, "credits": 400, "captured": 400,
             "refunded": 0, "status": "captured"},
            {"order_id": GONE, "user_id": USER, "credits": 100, "captured": 0,
             "refunded": 0, "status": "released"},
        ),
        payment_sessions=(
            {"order_id": CARD, "session_id": "cs_card", "payment_intent_id": "pi_card",
             "status": "complete", "amount_total": 3000, "amount_refunded": 2000},
            {"order_id": GONE, "session_id": "cs_gone", "payment_intent_id": None,
             "status": "expired", "amount_total": 500, "amount_refunded": 0},
        ),
        refunds=({"order_id": CARD, "refund_key": "failed-lines-1", "stripe_refund_id": "re_1",
                  "amount": 2000, "status": "succeeded"},),
        stripe_events=({"event_id": "evt_1", "type": "checkout.session.completed",
                        "object_id": "cs_card", "processed_at": NOW},),
        jobs=tuple({"id": f"job-{o}", "order_id": o, "status": s}
                   for o, s in ((CREDITS, "done"), (CARD, "partially_done"), (GONE, "cancelled"))),
        job_items=(
            {"job_id": f"job-{CREDITS}", "line_no": 1, "kind": "session_package", "quantity": 1,
             "units_per_item": 10, "status": "delivered"},
            {"job_id": f"job-{CARD}", "line_no": 1, "kind": "server_plan", "quantity": 1,
             "units_per_item": 1, "status": "failed"},
            {"job_id": f"job-{CARD}", "line_no": 2, "kind": "credit_pack", "quantity": 1,
             "units_per_item": 100, "status": "delivered"},
            {"job_id": f"job-{GONE}", "line_no": 1, "kind": "session_package", "quantity": 1,
             "units_per_item": 10, "status": "pending"},
        ),
        entitlements=({"order_id": CREDITS, "line_no": 1, "sessions": 10},),
        carts=({"id": "cart-1", "status": "checked_out"}, {"id": "cart-2", "status": "checked_out"},
               {"id": "cart-3", "status": "open"}),
        checkouts=({"id": CREDITS, "cart_id": "cart-1", "status": "completed"},
                   {"id": CARD, "cart_id": "cart-2", "status": "partially_completed"},
                   {"id": GONE, "cart_id": "cart-3", "status": "cancelled"}),
        outbox=outbox,
        inbox=inbox,
        dead_letters=({"service": "provisioning", "message_id": "m7",
                       "message_type": "provisioning.cancel_job", "correlation_id": GONE,
                       "reason": "PermanentError: test"},),
        sim_sessions=(
            {"id": "cs_card", "order_id": CARD, "status": "complete", "payment_status": "paid",
             "amount_total": 3000, "payment_intent": "pi_card", "intent_status": "succeeded",
             "amount_received": 3000},
            {"id": "cs_gone", "order_id": GONE, "status": "expired", "payment_status": "unpaid",
             "amount_total": 500, "payment_intent": None, "intent_status": None,
             "amount_received": 0},
        ),
        sim_refunds=({"id": "re_1", "payment_intent": "pi_card", "amount": 2000,
                      "status": "succeeded", "order_id": CARD, "refund_key": "failed-lines-1"},),
        sim_fault_counters={"webhook_duplicates": 2, "webhook_redeliveries": 1},
    )  # fmt: skip


def change(rows: Rows, match: Callable[[Row], bool], **changes: Any) -> Rows:
    return tuple({**r, **changes} if match(r) else r for r in rows)


def by_id(key: str, value: Any) -> Callable[[Row], bool]:
    return lambda r: r[key] == value


def result(snapshot: Snapshot, number: int) -> InvariantResult:
    return check_all(snapshot)[number - 1]


def assert_fails(snapshot: Snapshot, number: int, culprit: str) -> InvariantResult:
    found = result(snapshot, number)
    assert not found.passed, found
    assert any(culprit in o for o in found.offenders), found.offenders
    return found


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
    ]
    assert [r.offenders for r in results] == [[]] * 11
    assert all(r.passed for r in results)


# --- 1 credits conserved ---------------------------------------------------------------------


def test_an_extra_ledger_entry_breaks_conservation_for_that_account() -> None:
    s = consistent()
    s = dataclasses.replace(s, ledger=(*s.ledger, _entry(7, "grant", 5, None, "grant:api:2")))
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
        ledger=(*s.ledger, _entry(7, "refund", 500, CREDITS, f"refund:{CREDITS}:k")),
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


def a_server_plan_of_three_with_one_failed() -> Snapshot:
    """CARD's server line bought three times, one server refused and refunded (2000 of 6000)."""
    s = consistent()
    return dataclasses.replace(
        s,
        order_lines=change(s.order_lines, lambda r: r["order_id"] == CARD and r["line_no"] == 1,
                           quantity=3),
        orders=change(s.orders, by_id("id", CARD), money_total=7000),
        payment_sessions=change(s.payment_sessions, by_id("order_id", CARD), amount_total=7000),
        sim_sessions=change(s.sim_sessions, by_id("id", "cs_card"), amount_total=7000,
                            amount_received=7000),
        refunds=change(s.refunds, by_id("order_id", CARD), refund_key="failed-lines-1x1"),
        sim_refunds=change(s.sim_refunds, by_id("order_id", CARD), refund_key="failed-lines-1x1"),
        job_items=change(s.job_items, lambda i: i["job_id"] == f"job-{CARD}" and i["line_no"] == 1,
                         quantity=3, status="partially_delivered", units_failed=1),
        job_units=tuple({"job_id": f"job-{CARD}", "line_no": 1, "unit_no": n, "status": st}
                        for n, st in ((1, "delivered"), (2, "delivered"), (3, "failed"))),
    )  # fmt: skip


def test_one_failed_server_of_three_refunds_a_third_and_every_invariant_holds() -> None:
    results = check_all(a_server_plan_of_three_with_one_failed())
    assert [r.offenders for r in results] == [[]] * 11


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


# --- 6 each effect at most once --------------------------------------------------------------


def test_two_jobs_or_two_captures_for_one_order_fail() -> None:
    s = consistent()
    s = dataclasses.replace(
        s,
        jobs=(*s.jobs, {"id": "job-dup", "order_id": CREDITS, "status": "done"}),
        ledger=(*s.ledger, _entry(7, "capture", 1, CREDITS, f"capture:{CREDITS}:again")),
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
