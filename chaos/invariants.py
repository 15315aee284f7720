"""The invariants of the chaos run, checked on a Snapshot. Pure: no I/O, nothing but the rows.

Each check returns every offender (the report caps what it prints, never what it counts). The
rules come from the services' own pure modules (ledger postings, the refund rounding rule, the
topology), so the checker cannot drift from what the services mean.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from chaos.snapshot import Row, Snapshot
from services.orders.saga.refunds import share_of_failed
from services.orders.saga.state import TERMINAL
from services.payments.domain import (
    REFUND_HOLDS_MONEY,
    Balance,
    balances_from_entries,
    posting,
    reconciled_target,
)
from shared.messages.contracts import CheckoutLine, OrderCompleted
from shared.topology import SERVICES, event_types

K = TypeVar("K", bound=Hashable)
TERMINAL_STATUSES = frozenset(s.value for s in TERMINAL)
# Order statuses only reachable once the fulfilment job exists.
PAST_JOB = frozenset(
    {"awaiting_payment", "paid", "provisioning", "completed", "partially_completed", "refunded"}
)
FINISHED_ONCE = frozenset({"completed", "partially_completed", "refunded"})


@dataclass(frozen=True)
class InvariantResult:
    name: str
    passed: bool
    offenders: list[str]
    detail: str


def _result(name: str, offenders: list[str], detail: str) -> InvariantResult:
    return InvariantResult(name, not offenders, offenders, detail)


def _group(rows: Iterable[Row], key: Callable[[Row], K]) -> dict[K, list[Row]]:
    grouped: dict[K, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[key(row)].append(row)
    return grouped


def _index(rows: Iterable[Row], key: str) -> dict[Any, Row]:
    return {row[key]: row for row in rows}


def _ended(s: Snapshot) -> set[str]:
    """Saga ids that reached their end (step done, order status terminal)."""
    return {
        saga["id"]
        for saga in s.sagas
        if saga["step"] == "done" and saga["state"].get("status") in TERMINAL_STATUSES
    }


def _ledger_sum(s: Snapshot, kind: str) -> dict[str, int]:
    """Per order, the credits its ledger entries of `kind` moved."""
    sums: dict[str, int] = defaultdict(int)
    for entry in s.ledger:
        if entry["kind"] == kind and entry["order_id"]:
            sums[entry["order_id"]] += entry["amount"]
    return sums


def _money_refunded(s: Snapshot) -> dict[str, int]:
    """Per order, the payments-side refunds that hold money (pending or succeeded)."""
    sums: dict[str, int] = defaultdict(int)
    for refund in s.refunds:
        if refund["status"] in REFUND_HOLDS_MONEY:
            sums[refund["order_id"]] += refund["amount"]
    return sums


def _sim_paid(session: Row) -> bool:
    return bool(session["payment_status"] == "paid" or session["intent_status"] == "succeeded")


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
    entries = _group(s.ledger, lambda e: str(e["user_id"]))
    from_ledger = balances_from_entries(_EntryView(e) for e in s.ledger)
    accounts = _index(s.accounts, "user_id")
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
    ended = _ended(s)
    captured, released, refunded = (_ledger_sum(s, k) for k in ("capture", "release", "refund"))
    for r in sorted(s.reservations, key=lambda r: str(r["order_id"])):
        oid, problems = r["order_id"], []
        if r["status"] == "reserved" and oid in ended:
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
    return _result(
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
    sim_by_order = _group(s.sim_sessions, lambda x: str(x["order_id"]))
    sim_charged: dict[str, int] = {}
    for oid, at_stripe in sorted(sim_by_order.items()):
        paid = [x for x in at_stripe if _sim_paid(x)]
        if len(paid) > 1:
            offenders.append(f"order {oid}: {len(paid)} paid Stripe sessions")
        sim_charged[oid] = sum(x["amount_received"] for x in paid)
    sim_refunded: dict[str, int] = defaultdict(int)
    for refund in s.sim_refunds:
        if refund["status"] in ("pending", "succeeded", "requires_action"):
            sim_refunded[str(refund["order_id"])] += refund["amount"]
    for oid, amount in sorted(sim_refunded.items()):
        if amount > sim_charged.get(oid, 0):
            offenders.append(f"order {oid}: Stripe refunded {amount} of {sim_charged.get(oid, 0)}")
    money_refunded = _money_refunded(s)
    sessions = _index(s.payment_sessions, "order_id")
    complete = Counter(r["order_id"] for r in s.payment_sessions if r["status"] == "complete")
    for oid, n in sorted(complete.items()):
        if n > 1:
            offenders.append(f"order {oid}: {n} completed payment sessions in payments")
    for oid in sorted(set(money_refunded) | set(sessions)):
        row = sessions.get(oid)
        charged = row["amount_total"] if row is not None and row["status"] == "complete" else 0
        if money_refunded.get(oid, 0) > charged:
            offenders.append(f"order {oid}: payments refunded {money_refunded[oid]} of {charged}")
        if row is not None and row["amount_refunded"] != money_refunded.get(oid, 0):
            offenders.append(
                f"order {oid}: amount_refunded {row['amount_refunded']} != refunds "
                f"{money_refunded.get(oid, 0)}"
            )
    captured, refunded = _ledger_sum(s, "capture"), _ledger_sum(s, "refund")
    for oid, credits in sorted(refunded.items()):
        if credits > captured.get(oid, 0):
            offenders.append(f"order {oid}: refunded {credits} credits of {captured.get(oid, 0)}")
    return _result(
        "no double charge",
        offenders,
        f"{sum(1 for x in s.sim_sessions if _sim_paid(x))} paid Stripe sessions, "
        f"{len(s.sim_refunds)} Stripe refunds, {len(s.refunds)} payments refunds",
    )


# --- 3 -------------------------------------------------------------------------------------


def no_order_without_job(s: Snapshot) -> InvariantResult:
    offenders = []
    jobs = _group(s.jobs, lambda j: str(j["order_id"]))
    sagas = _index(s.sagas, "id")
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
    return _result(
        "no order without a job",
        offenders,
        f"{len(s.orders)} orders, {len(s.jobs)} jobs, {len(s.sim_sessions)} Stripe sessions",
    )


# --- 4 -------------------------------------------------------------------------------------


def every_saga_terminal(s: Snapshot) -> InvariantResult:
    offenders = []
    ended = _ended(s)
    orders = _index(s.orders, "id")
    for saga in sorted(s.sagas, key=lambda x: str(x["id"])):
        status = saga["state"].get("status")
        if saga["id"] not in ended:
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
    return _result(
        "every saga terminal",
        offenders,
        f"{len(ended)} of {len(s.sagas)} sagas done, {len(s.checkouts)} checkouts",
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


def _units_failed(item: Row) -> int:
    """An item's failed units; a row without the column (before units were counted) failed
    all of its quantity or none."""
    if item.get("units_failed") is not None:
        return int(item["units_failed"])
    return int(item["quantity"]) if item["status"] == "failed" else 0


def _failed_units(s: Snapshot) -> dict[str, dict[int, int]]:
    """Per order, the failed units of each line that had any."""
    job_of = {str(j["id"]): str(j["order_id"]) for j in s.jobs}
    failed: dict[str, dict[int, int]] = defaultdict(dict)
    for item in s.job_items:
        if units := _units_failed(item):
            failed[job_of.get(str(item["job_id"]), "")][item["line_no"]] = units
    return failed


def paid_orders_settled(s: Snapshot) -> InvariantResult:
    offenders = []
    paid_history = {h["order_id"] for h in s.order_history if h["status"] == "paid"}
    sessions = {r["order_id"]: r for r in s.payment_sessions if r["status"] == "complete"}
    lines = _group(s.order_lines, lambda r: str(r["order_id"]))
    failed_units = _failed_units(s)
    money, credits = _money_refunded(s), _ledger_sum(s, "refund")
    captured = _ledger_sum(s, "capture")
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
    return _result("every paid order settled", offenders, f"{paid} paid orders")


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
    offenders += _more_than_once(
        (m for m in s.outbox if m["message_type"] == OrderCompleted.TYPE),
        lambda m: m["correlation_id"],
        "OrderCompleted events",
    )
    offenders += _grants_match_deliveries(s)
    return _result(
        "each effect at most once",
        offenders,
        f"{len(s.ledger)} ledger entries, {len(s.jobs)} jobs, {len(s.job_items)} item results, "
        f"{len(s.inbox)} inbox rows",
    )


def _grants_match_deliveries(s: Snapshot) -> list[str]:
    """A delivered credit pack is exactly one grant of its units (grant:<order>:<line>)."""
    grants = {e["reference"]: e["amount"] for e in s.ledger if e["kind"] == "grant"}
    job_of = {str(j["id"]): str(j["order_id"]) for j in s.jobs}
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
    return _result(
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
    return _result("no unpublished outbox row", offenders, f"{len(s.outbox)} outbox rows")


# --- 9 -------------------------------------------------------------------------------------


def no_frozen_cart(s: Snapshot) -> InvariantResult:
    offenders = []
    ended, sagas = _ended(s), {x["id"] for x in s.sagas}
    live = {c["cart_id"] for c in s.checkouts if c["id"] in sagas and c["id"] not in ended}
    for cart in sorted(s.carts, key=lambda c: str(c["id"])):
        if cart["status"] == "checking_out" and cart["id"] not in live:
            offenders.append(f"cart {cart['id']}: checking_out without a live saga")
    for checkout in sorted(s.checkouts, key=lambda c: str(c["id"])):
        if checkout["status"] == "requested" and checkout["id"] in ended:
            offenders.append(f"order {checkout['id']}: saga ended, checkout still requested")
    return _result("no cart frozen without a live saga", offenders, f"{len(s.carts)} carts")


# --- 10 ------------------------------------------------------------------------------------


def stripe_agrees(s: Snapshot) -> InvariantResult:
    offenders = []
    ours = _index(s.payment_sessions, "session_id")
    ended = _ended(s)
    for x in sorted(s.sim_sessions, key=lambda x: str(x["id"])):
        oid, row = x["order_id"], ours.get(x["id"])
        stripe_says = reconciled_target(x["status"], x["payment_status"], x["intent_status"])
        expected = stripe_says or "open"
        if row is None and (_sim_paid(x) or x["status"] == "open"):
            offenders.append(
                f"order {oid}: Stripe session {x['id']} {expected}, unknown to payments"
            )
        elif row is not None and row["status"] != expected:
            offenders.append(f"order {oid}: Stripe says {expected}, payments {row['status']}")
        if x["status"] == "open" and oid in ended:
            offenders.append(f"order {oid}: Stripe session {x['id']} left open, saga ended")
    sim_ids = {x["id"] for x in s.sim_sessions}
    for row in s.payment_sessions:
        if row["session_id"] not in sim_ids:
            offenders.append(f"order {row['order_id']}: session {row['session_id']} not at Stripe")
    our_refunds = _index((r for r in s.refunds if r["stripe_refund_id"]), "stripe_refund_id")
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
    return _result(
        "Stripe and payments agree",
        offenders,
        f"{len(s.sim_sessions)} Stripe sessions, {len(s.payment_sessions)} in payments, "
        f"{len(s.stripe_events)} stored events",
    )


# --- 11 ------------------------------------------------------------------------------------

REFUND_KEY_PREFIX = "failed-lines-"


def _refunded_units(key: str, quantity: dict[int, int]) -> dict[int, int] | None:
    """The units a refund key says were refunded, per line (`n`: all of line n, `nxk`: k of
    its units); None for a key that is not a failed-lines refund."""
    if not key.startswith(REFUND_KEY_PREFIX):
        return None
    units: dict[int, int] = {}
    for part in key.removeprefix(REFUND_KEY_PREFIX).split("-"):
        line, _, count = part.partition("x")
        units[int(line)] = int(count) if count else quantity.get(int(line), 0)
    return units


def units_accounted(s: Snapshot) -> InvariantResult:
    """Per line of a completed or partially completed order: units delivered = units bought -
    units refunded; a line built unit by unit (a server plan) has a delivered unit row for each."""
    offenders = []
    lines = _group(s.order_lines, lambda r: str(r["order_id"]))
    job_of = {str(j["id"]): str(j["order_id"]) for j in s.jobs}
    items = {(job_of.get(str(i["job_id"]), ""), i["line_no"]): i for i in s.job_items}
    # Lines made unit by unit (servers) have a row per unit; count the delivered ones.
    built_units: dict[tuple[str, int], int] = defaultdict(int)
    for unit in s.job_units:
        built_units[(job_of.get(str(unit["job_id"]), ""), unit["line_no"])] += (
            unit["status"] == "delivered"
        )
    keys: dict[str, set[str]] = defaultdict(set)
    for refund in s.refunds:
        keys[refund["order_id"]].add(refund["refund_key"])
    for entry in s.ledger:
        if entry["kind"] == "refund" and entry["order_id"]:
            keys[entry["order_id"]].add(entry["reference"].split(":", 2)[-1])
    checked = 0
    for order in sorted(s.orders, key=lambda o: str(o["id"])):
        oid = order["id"]
        if order["status"] not in ("completed", "partially_completed"):
            continue
        quantity = {line["line_no"]: line["quantity"] for line in lines.get(oid, [])}
        refunded: dict[int, int] = {}
        for key in sorted(keys.get(oid, ())):
            units = _refunded_units(key, quantity)
            if units is None:
                offenders.append(f"order {oid}: {order['status']} with a {key} refund")
            else:
                refunded = units  # money and credits of one failure share its key
        for line_no, bought in sorted(quantity.items()):
            item = items.get((oid, line_no))
            if item is None:
                offenders.append(f"order {oid} line {line_no}: no job item")
                continue
            checked += 1
            delivered = bought - _units_failed(item)
            if delivered != bought - refunded.get(line_no, 0):
                offenders.append(
                    f"order {oid} line {line_no}: {delivered} of {bought} units delivered, "
                    f"{refunded.get(line_no, 0)} refunded"
                )
            built = (oid, line_no) in built_units
            if built and built_units[(oid, line_no)] != delivered:
                offenders.append(
                    f"order {oid} line {line_no}: {built_units[(oid, line_no)]} units built "
                    f"for {delivered} delivered"
                )
    return _result("units delivered = bought - refunded", offenders, f"{checked} order lines")


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
)


def check_all(snapshot: Snapshot) -> list[InvariantResult]:
    """Every invariant, in the order of the issue's list."""
    return [check(snapshot) for check in CHECKS]
