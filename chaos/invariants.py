"""The invariants of the chaos run, checked on a Snapshot. Pure: no I/O, nothing but the rows.

Each check returns every offender (the report caps what it prints, never what it counts). The
rules come from the services' own pure modules (ledger postings, the refund rounding rule, the
topology), so the checker cannot drift from what the services mean. One to ten are here; eleven
to fourteen, what became of every unit bought, are in units.py; both read facts.py.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from chaos.facts import (
    InvariantResult,
    ended,
    group,
    index,
    job_orders,
    ledger_sum,
    money_refunded,
    sim_paid,
    stripe_charged,
    stripe_refunded,
    units_failed,
    verdict,
)
from chaos.snapshot import Row, Snapshot
from chaos.units import (
    amount_paid_is_total,
    delivered_units_kept,
    paid_units_settled,
    units_accounted,
)
from services.orders.saga.refunds import share_of_failed
from services.payments.domain import Balance, balances_from_entries, posting, reconciled_target
from shared.messages.contracts import CheckoutLine, InquireOrder, OrderCompleted
from shared.topology import SERVICES, event_types

K = TypeVar("K", bound=Hashable)
# Order statuses only reachable once the fulfilment job exists.
PAST_JOB = frozenset(
    {"awaiting_payment", "paid", "provisioning", "completed", "partially_completed", "refunded"}
)
FINISHED_ONCE = frozenset({"completed", "partially_completed", "refunded"})


# --- 1 -------------------------------------------------------------------------------------


def _account_problems(account: Row, entries: list[Row], ledger: Balance, held: int) -> list[str]:
    available, reserved = account["available"], account["reserved"]
    problems = []
    if (available, reserved) != (ledger.available, ledger.reserved):
        problems.append(
            f"cached {available}/{reserved} != ledger {ledger.available}/{ledger.reserved}"
        )
    by_kind: Counter[str] = Counter()
    for entry in entries:
        by_kind[entry["kind"]] += entry["amount"]
    expected = by_kind["grant"] - by_kind["capture"] + by_kind["refund"]
    if available + reserved != expected:
        problems.append(f"balance {available + reserved} != grants-captures+refunds {expected}")
    if available < 0 or reserved < 0:
        problems.append(f"negative balance {available}/{reserved}")
    if reserved != held:
        problems.append(f"reserved {reserved} != {held} held by open reservations")
    running = Balance()
    for entry in sorted(entries, key=lambda e: e["id"]):
        if entry["amount"] <= 0:
            problems.append(f"entry {entry['id']} moves {entry['amount']}")
            continue
        p = posting(entry["kind"], account["user_id"], entry["amount"])
        running = Balance(
            running.available + p.available_delta, running.reserved + p.reserved_delta
        )
        if running.available < 0 or running.reserved < 0:
            problems.append(f"ledger goes negative at entry {entry['id']}")
            break
    return problems


def credits_conserved(s: Snapshot) -> InvariantResult:
    offenders = []
    entries = group(s.ledger, lambda e: str(e["user_id"]))
    from_ledger = balances_from_entries(_EntryView(e) for e in s.ledger)
    accounts = index(s.accounts, "user_id")
    held: dict[str, int] = defaultdict(int)
    for r in s.reservations:
        if r["status"] == "reserved":
            held[r["user_id"]] += r["credits"]
    for user in sorted(set(accounts) | set(entries)):
        account = accounts.get(user) or {"user_id": user, "available": 0, "reserved": 0}
        problems = _account_problems(
            account, entries.get(user, []), from_ledger.get(user, Balance()), held[user]
        )
        if problems:
            offenders.append(f"account {user}: " + "; ".join(problems))
    done = ended(s)
    captured, released, refunded = (ledger_sum(s, k) for k in ("capture", "release", "refund"))
    for r in sorted(s.reservations, key=lambda r: str(r["order_id"])):
        oid, problems = r["order_id"], []
        if r["status"] == "reserved" and oid in done:
            problems.append(f"{r['credits']} credits still held after the saga ended")
        if r["status"] == "captured" and captured[oid] != r["captured"]:
            problems.append(f"captured {r['captured']} but ledger captures {captured[oid]}")
        if r["status"] != "reserved" and captured[oid] + released[oid] != r["credits"]:
            problems.append(
                f"reserved {r['credits']} != captured {captured[oid]} + released {released[oid]}"
            )
        if refunded[oid] != r["refunded"]:
            problems.append(f"refunded {r['refunded']} but ledger refunds {refunded[oid]}")
        if problems:
            offenders.append(f"order {oid}: " + "; ".join(problems))
    return verdict(
        "credits conserved",
        offenders,
        f"{len(accounts)} accounts, {len(s.ledger)} ledger entries, "
        f"{len(s.reservations)} reservations",
    )


@dataclass(frozen=True)
class _EntryView:
    row: Row

    @property
    def amount(self) -> int:
        return int(self.row["amount"])

    @property
    def debit_account(self) -> str:
        return str(self.row["debit_account"])

    @property
    def credit_account(self) -> str:
        return str(self.row["credit_account"])


# --- 2 -------------------------------------------------------------------------------------


def no_double_charge(s: Snapshot) -> InvariantResult:
    offenders = []
    paid_sessions = Counter(str(x["order_id"]) for x in s.sim_sessions if sim_paid(x))
    for oid, n in sorted(paid_sessions.items()):
        if n > 1:
            offenders.append(f"order {oid}: {n} paid Stripe sessions")
    sim_charged = stripe_charged(s)
    for oid, amount in sorted(stripe_refunded(s).items()):
        if amount > sim_charged.get(oid, 0):
            offenders.append(f"order {oid}: Stripe refunded {amount} of {sim_charged.get(oid, 0)}")
    refunded_money = money_refunded(s)
    sessions = index(s.payment_sessions, "order_id")
    complete = Counter(r["order_id"] for r in s.payment_sessions if r["status"] == "complete")
    for oid, n in sorted(complete.items()):
        if n > 1:
            offenders.append(f"order {oid}: {n} completed payment sessions in payments")
    for oid in sorted(set(refunded_money) | set(sessions)):
        row = sessions.get(oid)
        charged = row["amount_total"] if row is not None and row["status"] == "complete" else 0
        if refunded_money.get(oid, 0) > charged:
            offenders.append(f"order {oid}: payments refunded {refunded_money[oid]} of {charged}")
        if row is not None and row["amount_refunded"] != refunded_money.get(oid, 0):
            offenders.append(
                f"order {oid}: amount_refunded {row['amount_refunded']} != refunds "
                f"{refunded_money.get(oid, 0)}"
            )
    captured, refunded = ledger_sum(s, "capture"), ledger_sum(s, "refund")
    for oid, credits in sorted(refunded.items()):
        if credits > captured.get(oid, 0):
            offenders.append(f"order {oid}: refunded {credits} credits of {captured.get(oid, 0)}")
    return verdict(
        "no double charge",
        offenders,
        f"{sum(1 for x in s.sim_sessions if sim_paid(x))} paid Stripe sessions, "
        f"{len(s.sim_refunds)} Stripe refunds, {len(s.refunds)} payments refunds",
    )


# --- 3 -------------------------------------------------------------------------------------


def no_order_without_job(s: Snapshot) -> InvariantResult:
    offenders = []
    jobs = group(s.jobs, lambda j: str(j["order_id"]))
    sagas = index(s.sagas, "id")
    for order in sorted(s.orders, key=lambda o: str(o["id"])):
        oid = order["id"]
        state = (sagas.get(oid) or {}).get("state") or {}
        found = jobs.get(oid, [])
        if (order["status"] in PAST_JOB or state.get("job_id")) and not found:
            offenders.append(f"order {oid}: {order['status']} without a job")
        elif order["job_id"] and found and str(found[0]["id"]) != str(order["job_id"]):
            offenders.append(f"order {oid}: names job {order['job_id']}, job is {found[0]['id']}")
    for row in s.payment_sessions:
        if row["order_id"] not in jobs:
            offenders.append(
                f"order {row['order_id']}: payment session {row['session_id']} without a job"
            )
    for x in s.sim_sessions:
        if x["order_id"] not in jobs:
            offenders.append(f"order {x['order_id']}: Stripe session {x['id']} without a job")
    return verdict(
        "no order without a job",
        offenders,
        f"{len(s.orders)} orders, {len(s.jobs)} jobs, {len(s.sim_sessions)} Stripe sessions",
    )


# --- 4 -------------------------------------------------------------------------------------


def every_saga_terminal(s: Snapshot) -> InvariantResult:
    offenders = []
    done = ended(s)
    orders = index(s.orders, "id")
    for saga in sorted(s.sagas, key=lambda x: str(x["id"])):
        status = saga["state"].get("status")
        if saga["id"] not in done:
            offenders.append(f"order {saga['id']}: step={saga['step']} status={status}")
        elif saga["id"] in orders and orders[saga["id"]]["status"] != status:
            offenders.append(
                f"order {saga['id']}: order is {orders[saga['id']]['status']}, saga says {status}"
            )
    sagas = {x["id"] for x in s.sagas}
    for oid in sorted(set(orders) - sagas):
        offenders.append(f"order {oid}: no saga row")
    for checkout in s.checkouts:
        if checkout["id"] not in sagas:
            offenders.append(f"order {checkout['id']}: checked out in cart, saga never started")
    return verdict(
        "every saga terminal",
        offenders,
        f"{len(done)} of {len(s.sagas)} sagas done, {len(s.checkouts)} checkouts",
    )


# --- 5 -------------------------------------------------------------------------------------


def _checkout_lines(rows: list[Row]) -> list[CheckoutLine]:
    return [
        CheckoutLine(
            line_no=r["line_no"],
            item_id=r["item_id"],
            kind=r["kind"],
            name=r["name"],
            quantity=r["quantity"],
            unit_price=r["unit_price"],
            unit_credits=r["unit_credits"],
            paid_with=r["paid_with"],
        )
        for r in rows
    ]


def _failed_units(s: Snapshot) -> dict[str, dict[int, int]]:
    """Per order, the failed units of each line that had any."""
    job_of = job_orders(s)
    failed: dict[str, dict[int, int]] = defaultdict(dict)
    for item in s.job_items:
        if units := units_failed(item):
            failed[job_of.get(str(item["job_id"]), "")][item["line_no"]] = units
    return failed


def paid_orders_settled(s: Snapshot) -> InvariantResult:
    offenders = []
    paid_history = {h["order_id"] for h in s.order_history if h["status"] == "paid"}
    sessions = {r["order_id"]: r for r in s.payment_sessions if r["status"] == "complete"}
    lines = group(s.order_lines, lambda r: str(r["order_id"]))
    failed_units = _failed_units(s)
    money, credits = money_refunded(s), ledger_sum(s, "refund")
    captured = ledger_sum(s, "capture")
    paid = 0
    for order in sorted(s.orders, key=lambda o: str(o["id"])):
        oid, status = order["id"], order["status"]
        if oid not in paid_history and oid not in sessions:
            continue
        paid += 1
        amount_paid = sessions[oid]["amount_total"] if oid in sessions else 0
        got = (money.get(oid, 0), credits.get(oid, 0))
        if status == "completed":
            want = (0, 0)
        elif status == "partially_completed":
            failed = failed_units.get(oid, {})
            share = share_of_failed(_checkout_lines(lines[oid]), failed, amount_paid=amount_paid)
            want = (share.money, share.credits)
            bought = sum(line["quantity"] for line in lines[oid])
            if not failed or sum(failed.values()) == bought:
                offenders.append(
                    f"order {oid}: partially_completed with {sum(failed.values())} failed "
                    f"of {bought} units"
                )
        elif status == "refunded":
            want = (amount_paid, captured.get(oid, 0))
        else:
            offenders.append(f"order {oid}: paid but {status}")
            continue
        if got != want:
            offenders.append(
                f"order {oid}: {status}, refunded {got[0]} money/{got[1]} credits, "
                f"expected {want[0]}/{want[1]}"
            )
    return verdict("every paid order settled", offenders, f"{paid} paid orders")


# --- 6 -------------------------------------------------------------------------------------


def _more_than_once(rows: Iterable[Row], key: Callable[[Row], K], what: str) -> list[str]:
    counts = Counter(key(r) for r in rows)
    return [f"{k}: {n} {what}" for k, n in sorted(counts.items(), key=str) if n > 1]


def effects_once(s: Snapshot) -> InvariantResult:
    offenders = []
    by_order = [e for e in s.ledger if e["kind"] in ("reserve", "capture", "release")]
    offenders += _more_than_once(by_order, lambda e: (e["order_id"], e["kind"]), "ledger entries")
    offenders += _more_than_once(s.ledger, lambda e: e["reference"], "entries for one reference")
    offenders += _more_than_once(s.reservations, lambda r: r["order_id"], "reservations")
    offenders += _more_than_once(s.jobs, lambda j: j["order_id"], "jobs")
    offenders += _more_than_once(s.job_items, lambda i: (i["job_id"], i["line_no"]), "results")
    offenders += _more_than_once(
        s.entitlements, lambda e: (e["order_id"], e["line_no"]), "entitlements"
    )
    offenders += _more_than_once(s.sim_sessions, lambda x: x["order_id"], "Stripe sessions")
    offenders += _more_than_once(
        s.sim_refunds, lambda r: (r["order_id"], r["refund_key"]), "Stripe refunds for one key"
    )
    offenders += _more_than_once(
        s.inbox, lambda r: (r["service"], r["message_id"]), "inbox rows for one message"
    )
    # `cancelled` may be recorded twice (a late payment to a cancelled order, then refunded);
    # the other ends are reached once, by the saga's _finish.
    offenders += _more_than_once(
        (h for h in s.order_history if h["status"] in FINISHED_ONCE),
        lambda h: (h["order_id"], h["status"]),
        "status changes to it",
    )
    # The saga completes an order once; orders may say it again when the cart asks after an
    # outcome it has not seen (an answer to InquireOrder), which the cart applies once.
    questions = {r["message_id"] for r in s.inbox if r["message_type"] == InquireOrder.TYPE}
    offenders += _more_than_once(
        (
            m
            for m in s.outbox
            if m["message_type"] == OrderCompleted.TYPE and m.get("causation_id") not in questions
        ),
        lambda m: m["correlation_id"],
        "OrderCompleted events",
    )
    offenders += _grants_match_deliveries(s)
    return verdict(
        "each effect at most once",
        offenders,
        f"{len(s.ledger)} ledger entries, {len(s.jobs)} jobs, {len(s.job_items)} item results, "
        f"{len(s.inbox)} inbox rows",
    )


def _grants_match_deliveries(s: Snapshot) -> list[str]:
    """A delivered credit pack is exactly one grant of its units (grant:<order>:<line>)."""
    grants = {e["reference"]: e["amount"] for e in s.ledger if e["kind"] == "grant"}
    job_of = job_orders(s)
    offenders = []
    for item in s.job_items:
        if item["kind"] != "credit_pack":
            continue
        ref = f"grant:{job_of.get(str(item['job_id']))}:{item['line_no']}"
        units = item["quantity"] * item["units_per_item"]
        if item["status"] == "delivered" and grants.get(ref) != units:
            offenders.append(f"{ref}: delivered {units} credits, ledger granted {grants.get(ref)}")
        elif item["status"] != "delivered" and ref in grants:
            offenders.append(f"{ref}: {item['status']} credit pack granted {grants[ref]}")
    return offenders


# --- 7 -------------------------------------------------------------------------------------


def _consumers(message: Row) -> tuple[str, ...]:
    if message["kind"] == "command":
        return (message["target"],)
    return tuple(svc for svc in SERVICES if message["message_type"] in event_types(svc))


def messages_accounted(s: Snapshot) -> InvariantResult:
    offenders = []
    applied = {(r["service"], r["message_id"]) for r in s.inbox}
    dead = {(d["service"], d["message_id"]): d for d in s.dead_letters}
    both = 0
    for d in s.dead_letters:
        if not d["reason"]:
            offenders.append(
                f"{d['service']} {d['message_type']} {d['message_id']}: "
                "dead-lettered without a reason"
            )
    expected = 0
    for m in sorted(s.outbox, key=lambda m: (m["service"], m["seq"])):
        for consumer in _consumers(m):
            expected += 1
            key = (consumer, m["message_id"])
            if key in applied:
                both += key in dead
                continue
            if key not in dead:
                offenders.append(
                    f"{m['service']}->{consumer} {m['message_type']} {m['message_id']} "
                    f"(order {m['correlation_id']}): neither applied nor dead-lettered"
                )
    return verdict(
        "every message applied or dead-lettered",
        offenders,
        f"{expected} deliveries owed, {len(applied)} applied, {len(s.dead_letters)} "
        f"dead-lettered ({both} of them also applied)",
    )


# --- 8 -------------------------------------------------------------------------------------


def outbox_drained(s: Snapshot) -> InvariantResult:
    offenders = [
        f"{m['service']} {m['message_type']} {m['message_id']} (order {m['correlation_id']})"
        for m in sorted(s.outbox, key=lambda m: (m["service"], m["seq"]))
        if m["published_at"] is None
    ]
    return verdict("no unpublished outbox row", offenders, f"{len(s.outbox)} outbox rows")


# --- 9 -------------------------------------------------------------------------------------


def no_frozen_cart(s: Snapshot) -> InvariantResult:
    offenders = []
    done, sagas = ended(s), {x["id"] for x in s.sagas}
    live = {c["cart_id"] for c in s.checkouts if c["id"] in sagas and c["id"] not in done}
    for cart in sorted(s.carts, key=lambda c: str(c["id"])):
        if cart["status"] == "checking_out" and cart["id"] not in live:
            offenders.append(f"cart {cart['id']}: checking_out without a live saga")
    for checkout in sorted(s.checkouts, key=lambda c: str(c["id"])):
        if checkout["status"] == "requested" and checkout["id"] in done:
            offenders.append(f"order {checkout['id']}: saga ended, checkout still requested")
    return verdict("no cart frozen without a live saga", offenders, f"{len(s.carts)} carts")


# --- 10 ------------------------------------------------------------------------------------


def stripe_agrees(s: Snapshot) -> InvariantResult:
    offenders = []
    ours = index(s.payment_sessions, "session_id")
    done = ended(s)
    for x in sorted(s.sim_sessions, key=lambda x: str(x["id"])):
        oid, row = x["order_id"], ours.get(x["id"])
        stripe_says = reconciled_target(x["status"], x["payment_status"], x["intent_status"])
        expected = stripe_says or "open"
        if row is None and (sim_paid(x) or x["status"] == "open"):
            offenders.append(
                f"order {oid}: Stripe session {x['id']} {expected}, unknown to payments"
            )
        elif row is not None and row["status"] != expected:
            offenders.append(f"order {oid}: Stripe says {expected}, payments {row['status']}")
        if x["status"] == "open" and oid in done:
            offenders.append(f"order {oid}: Stripe session {x['id']} left open, saga ended")
    sim_ids = {x["id"] for x in s.sim_sessions}
    for row in s.payment_sessions:
        if row["session_id"] not in sim_ids:
            offenders.append(f"order {row['order_id']}: session {row['session_id']} not at Stripe")
    our_refunds = index((r for r in s.refunds if r["stripe_refund_id"]), "stripe_refund_id")
    for refund in s.sim_refunds:
        mine = our_refunds.get(refund["id"])
        if mine is None and refund["refund_key"]:
            offenders.append(
                f"order {refund['order_id']}: Stripe refund {refund['id']} unknown to payments"
            )
        elif mine is not None and mine["status"] != refund["status"]:
            offenders.append(
                f"order {refund['order_id']}: refund {refund['id']} is "
                f"{refund['status']} at Stripe, {mine['status']} in payments"
            )
    sim_refund_ids = {r["id"] for r in s.sim_refunds}
    for r in s.refunds:
        if r["stripe_refund_id"] not in sim_refund_ids:
            offenders.append(f"order {r['order_id']}: refund {r['stripe_refund_id']} not at Stripe")
    for event in s.stripe_events:
        if event["processed_at"] is None:
            offenders.append(f"event {event['event_id']} ({event['type']}) never applied")
    return verdict(
        "Stripe and payments agree",
        offenders,
        f"{len(s.sim_sessions)} Stripe sessions, {len(s.payment_sessions)} in payments, "
        f"{len(s.stripe_events)} stored events",
    )


CHECKS: tuple[Callable[[Snapshot], InvariantResult], ...] = (
    credits_conserved,
    no_double_charge,
    no_order_without_job,
    every_saga_terminal,
    paid_orders_settled,
    effects_once,
    messages_accounted,
    outbox_drained,
    no_frozen_cart,
    stripe_agrees,
    units_accounted,
    paid_units_settled,
    delivered_units_kept,
    amount_paid_is_total,
)


def check_all(snapshot: Snapshot) -> list[InvariantResult]:
    """Every invariant, in the order of the issue's list."""
    return [check(snapshot) for check in CHECKS]
