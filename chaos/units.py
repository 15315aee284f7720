"""What became of every unit a shopper bought, checked on a Snapshot. Pure.

A line's units are paid when its payment was taken: Stripe took money for the order (a money
line) or the order's credits were captured (a credits line). Provisioning's job item says how
many were delivered; the refunds in effect say how many were given back as undelivered, by their
key (services/orders/saga/refunds.py): a money line counts the payments refunds that hold money,
a credits line the ledger's credit refunds. From these, per line:

- 11: delivered = bought - refunded, for every order that ended (bought: the units paid);
- 12: every paid unit delivered or refunded, whatever the order's status;
- 13: no unit both delivered and refunded as undelivered;
- 14: Stripe took exactly the order's money total, or gave all of it back; credits likewise.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from chaos.facts import (
    REFUND_KEY_PREFIX,
    TERMINAL_STATUSES,
    InvariantResult,
    group,
    index,
    job_orders,
    ledger_sum,
    refunded_units,
    sim_paid,
    stripe_charged,
    stripe_refunded,
    units_failed,
    verdict,
)
from chaos.snapshot import Row, Snapshot
from services.payments.domain import REFUND_HOLDS_MONEY

FULFILLED = frozenset({"completed", "partially_completed"})


@dataclass(frozen=True)
class LineUnits:
    order_id: str
    status: str  # the order's
    line_no: int
    paid_with: str  # "money" or "credits"
    quantity: int
    paid: bool  # the line's payment was taken
    delivered: int  # units provisioning delivered (or scheduled)
    refunded: int  # units the refunds in effect gave back as undelivered
    item: Row | None  # provisioning's job item for the line

    @property
    def bought(self) -> int:
        return self.quantity if self.paid else 0

    def describe(self) -> str:
        return f"order {self.order_id} line {self.line_no}"


def _refund_keys(s: Snapshot) -> dict[tuple[str, str], set[str]]:
    """(order, what its lines were paid with) -> the keys of the refunds in effect."""
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    for refund in s.refunds:
        if refund["status"] in REFUND_HOLDS_MONEY:
            keys[(str(refund["order_id"]), "money")].add(refund["refund_key"])
    for entry in s.ledger:
        if entry["kind"] == "refund" and entry["order_id"]:
            # refund:<order>:<key>
            keys[(str(entry["order_id"]), "credits")].add(entry["reference"].split(":", 2)[-1])
    return keys


def _delivered(item: Row | None, quantity: int) -> int:
    if item is None or item["status"] == "pending":
        return 0
    return quantity - units_failed(item)


def line_units(s: Snapshot) -> Iterator[LineUnits]:
    """Every order line's units: paid, delivered, refunded."""
    statuses = {str(o["id"]): str(o["status"]) for o in s.orders}
    job_of = job_orders(s)
    items = {(job_of.get(str(i["job_id"]), ""), i["line_no"]): i for i in s.job_items}
    keys = _refund_keys(s)
    charged, captured = stripe_charged(s), ledger_sum(s, "capture")
    for oid, rows in sorted(group(s.order_lines, lambda r: str(r["order_id"])).items()):
        quantity = {r["line_no"]: r["quantity"] for r in rows}
        given_back: dict[str, Counter[int]] = {"money": Counter(), "credits": Counter()}
        for kind, back in given_back.items():
            for key in keys[(oid, kind)]:
                back.update(refunded_units(key, quantity))
        paid = {"money": charged.get(oid, 0) > 0, "credits": captured.get(oid, 0) > 0}
        for row in sorted(rows, key=lambda r: int(r["line_no"])):
            item = items.get((oid, row["line_no"]))
            yield LineUnits(
                order_id=oid,
                status=statuses.get(oid, "missing"),
                line_no=row["line_no"],
                paid_with=row["paid_with"],
                quantity=row["quantity"],
                paid=paid[row["paid_with"]],
                delivered=_delivered(item, row["quantity"]),
                refunded=given_back[row["paid_with"]][row["line_no"]],
                item=item,
            )


# --- 11 ------------------------------------------------------------------------------------


def units_accounted(s: Snapshot) -> InvariantResult:
    """Per line of an order that ended: units delivered = units bought - units refunded (a line
    not paid for delivers nothing); a line built unit by unit (a server plan) has a delivered
    unit row for each unit delivered. A fulfilled order is refunded only for failed units."""
    offenders = []
    job_of = job_orders(s)
    # Lines made unit by unit (servers) have a row per unit; count the delivered ones.
    built_units: dict[tuple[str, int], int] = defaultdict(int)
    for unit in s.job_units:
        built_units[(job_of.get(str(unit["job_id"]), ""), unit["line_no"])] += (
            unit["status"] == "delivered"
        )
    statuses = {str(o["id"]): str(o["status"]) for o in s.orders}
    for (oid, _), keys in sorted(_refund_keys(s).items()):
        offenders += [
            f"order {oid}: {statuses.get(oid)} with a {key} refund"
            for key in sorted(keys)
            if statuses.get(oid) in FULFILLED and not key.startswith(REFUND_KEY_PREFIX)
        ]
    checked = 0
    for u in line_units(s):
        if u.status not in TERMINAL_STATUSES:
            continue
        if u.item is None and u.bought:
            offenders.append(f"{u.describe()}: no job item")
            continue
        checked += 1
        if u.delivered != u.bought - u.refunded:
            offenders.append(
                f"{u.describe()}: {u.delivered} of {u.bought} units delivered, "
                f"{u.refunded} refunded ({u.status})"
            )
        line = (u.order_id, u.line_no)
        if line in built_units and built_units[line] != u.delivered:
            offenders.append(
                f"{u.describe()}: {built_units[line]} units built for {u.delivered} delivered"
            )
    return verdict("units delivered = bought - refunded", offenders, f"{checked} order lines")


# --- 12 ------------------------------------------------------------------------------------


def paid_units_settled(s: Snapshot) -> InvariantResult:
    """Every unit paid for (money Stripe took, credits captured) is delivered or refunded: an
    order that kept the money and ended cancelled, or still hangs, is named."""
    offenders, paid = [], 0
    for u in line_units(s):
        if not u.paid:
            continue
        paid += u.quantity
        if u.delivered + u.refunded < u.quantity:
            offenders.append(
                f"{u.describe()}: {u.quantity - u.delivered - u.refunded} of {u.quantity} units "
                f"paid with {u.paid_with}, neither delivered nor refunded ({u.status})"
            )
    return verdict("no paid unit without delivery or refund", offenders, f"{paid} units paid for")


# --- 13 ------------------------------------------------------------------------------------


def delivered_units_kept(s: Snapshot) -> InvariantResult:
    """No unit is both delivered (provisioning's item) and given back as undelivered (a refund
    whose key covers it): goods delivered and refunded in full is the silent loss it names."""
    offenders, delivered = [], 0
    for u in line_units(s):
        delivered += u.delivered
        if u.delivered + u.refunded > u.quantity:
            offenders.append(
                f"{u.describe()}: {u.delivered} of {u.quantity} units delivered, "
                f"{u.refunded} refunded as undelivered ({u.status})"
            )
    return verdict(
        "no delivered unit refunded as undelivered", offenders, f"{delivered} units delivered"
    )


# --- 14 ------------------------------------------------------------------------------------


def _totals_problems(order: Row, lines: list[Row]) -> list[str]:
    money = sum(r["unit_price"] * r["quantity"] for r in lines if r["paid_with"] == "money")
    credits = sum(
        (r["unit_credits"] or 0) * r["quantity"] for r in lines if r["paid_with"] == "credits"
    )
    if (order["money_total"], order["credits_total"]) == (money, credits):
        return []
    return [
        f"totals {order['money_total']} {order['currency']}/{order['credits_total']} credits, "
        f"lines {money}/{credits}"
    ]


def amount_paid_is_total(s: Snapshot) -> InvariantResult:
    """The money Stripe took for an order (its paid sessions) is the order's money total, in
    its currency: 0 for one never paid, exactly the total for one fulfilled. Another sum taken
    (an amount mismatch) must be refunded in full and the order end refunded. The credits
    captured are none or the order's credits total, all of it for a fulfilled order. An
    order's totals are those of its lines."""
    offenders = []
    charged, refunded = stripe_charged(s), stripe_refunded(s)
    captured = ledger_sum(s, "capture")
    currencies: dict[str, set[str]] = defaultdict(set)
    for session in s.sim_sessions:
        if sim_paid(session):
            currencies[str(session["order_id"])].add(str(session["currency"]).upper())
    lines = group(s.order_lines, lambda r: str(r["order_id"]))
    for oid, order in sorted(index(s.orders, "id").items()):
        problems = _totals_problems(order, lines.get(oid, []))
        took, total, status = charged.get(oid, 0), order["money_total"], order["status"]
        exact = took == total and currencies[oid] <= {str(order["currency"]).upper()}
        if (took or status in FULFILLED) and not exact:
            given_back = refunded.get(oid, 0)
            if not (took and status == "refunded" and given_back == took):
                problems.append(
                    f"Stripe took {took} {'/'.join(sorted(currencies[oid])) or '-'} of "
                    f"{total} {order['currency']}, gave back {given_back}, order {status}"
                )
        credits = captured.get(oid, 0)
        if credits not in (0, order["credits_total"]) or (
            status in FULFILLED and credits != order["credits_total"]
        ):
            problems.append(f"captured {credits} of {order['credits_total']} credits, {status}")
        if problems:
            offenders.append(f"order {oid}: " + "; ".join(problems))
    return verdict(
        "amount paid = order total",
        offenders,
        f"{len(charged)} orders paid at Stripe, {len(captured)} with credits captured",
    )
