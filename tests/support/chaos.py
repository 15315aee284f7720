"""A small hand-made world for the chaos checker's tests: three orders (one paid with credits and
completed, one paid by card with one of its two lines failed, one cancelled before paying) that
pass every invariant, and helpers to break one thing in it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chaos.invariants import InvariantResult, check_all
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


def entry(n: int, kind: str, amount: int, order: str | None, ref: str) -> Row:
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
             "currency": "EUR", "money_total": 0, "credits_total": 400, "job_id": f"job-{CREDITS}"},
            {"id": CARD, "user_id": USER, "cart_id": "cart-2", "status": "partially_completed",
             "currency": "EUR", "money_total": 3000, "credits_total": 0, "job_id": f"job-{CARD}"},
            {"id": GONE, "user_id": USER, "cart_id": "cart-3", "status": "cancelled",
             "currency": "EUR", "money_total": 500, "credits_total": 100, "job_id": f"job-{GONE}"},
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
            entry(1, "grant", 1000, None, "grant:api:1"),
            entry(2, "reserve", 400, CREDITS, f"reserve:{CREDITS}"),
            entry(3, "capture", 400, CREDITS, f"capture:{CREDITS}"),
            entry(4, "grant", 100, CARD, f"grant:{CARD}:2"),
            entry(5, "reserve", 100, GONE, f"reserve:{GONE}"),
            entry(6, "release", 100, GONE, f"release:{GONE}"),
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
             "amount_total": 3000, "currency": "eur", "payment_intent": "pi_card", "intent_status": "succeeded",
             "amount_received": 3000},
            {"id": "cs_gone", "order_id": GONE, "status": "expired", "payment_status": "unpaid",
             "amount_total": 500, "currency": "eur", "payment_intent": None, "intent_status": None,
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
