"""What the chaos checks read off a Snapshot, once for all of them: per-order sums of money and
credits, which sagas ended, and what each refund key says was given back. Pure.

The checks live in invariants.py (one to ten) and units.py (what each unit bought became).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from chaos.snapshot import Row, Snapshot
from services.orders.saga.state import TERMINAL
from services.payments.domain import REFUND_HOLDS_MONEY

K = TypeVar("K", bound=Hashable)
TERMINAL_STATUSES = frozenset(s.value for s in TERMINAL)
# Stripe refunds in these statuses have given back (or are giving back) their money.
STRIPE_REFUND_HOLDS_MONEY = frozenset({"pending", "succeeded", "requires_action"})
# The saga's key for a refund of failed units (services/orders/saga/refunds.py).
REFUND_KEY_PREFIX = "failed-lines-"


@dataclass(frozen=True)
class InvariantResult:
    name: str
    passed: bool
    offenders: list[str]
    detail: str


def verdict(name: str, offenders: list[str], detail: str) -> InvariantResult:
    return InvariantResult(name, not offenders, offenders, detail)


def group(rows: Iterable[Row], key: Callable[[Row], K]) -> dict[K, list[Row]]:
    grouped: dict[K, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[key(row)].append(row)
    return grouped


def index(rows: Iterable[Row], key: str) -> dict[Any, Row]:
    return {row[key]: row for row in rows}


def ended(s: Snapshot) -> set[str]:
    """Saga ids that reached their end (step done, order status terminal)."""
    return {
        saga["id"]
        for saga in s.sagas
        if saga["step"] == "done" and saga["state"].get("status") in TERMINAL_STATUSES
    }


def ledger_sum(s: Snapshot, kind: str) -> dict[str, int]:
    """Per order, the credits its ledger entries of `kind` moved."""
    sums: dict[str, int] = defaultdict(int)
    for entry in s.ledger:
        if entry["kind"] == kind and entry["order_id"]:
            sums[entry["order_id"]] += entry["amount"]
    return sums


def money_refunded(s: Snapshot) -> dict[str, int]:
    """Per order, the payments-side refunds that hold money (pending or succeeded)."""
    sums: dict[str, int] = defaultdict(int)
    for refund in s.refunds:
        if refund["status"] in REFUND_HOLDS_MONEY:
            sums[refund["order_id"]] += refund["amount"]
    return sums


def sim_paid(session: Row) -> bool:
    return bool(session["payment_status"] == "paid" or session["intent_status"] == "succeeded")


def stripe_charged(s: Snapshot) -> dict[str, int]:
    """Per order, the money Stripe took: what its paid sessions received."""
    sums: dict[str, int] = defaultdict(int)
    for session in s.sim_sessions:
        if sim_paid(session):
            sums[str(session["order_id"])] += session["amount_received"]
    return sums


def stripe_refunded(s: Snapshot) -> dict[str, int]:
    """Per order, the money Stripe's refunds gave back (or are giving back)."""
    sums: dict[str, int] = defaultdict(int)
    for refund in s.sim_refunds:
        if refund["status"] in STRIPE_REFUND_HOLDS_MONEY:
            sums[str(refund["order_id"])] += refund["amount"]
    return sums


def job_orders(s: Snapshot) -> dict[str, str]:
    """Job id -> the order it fulfils."""
    return {str(j["id"]): str(j["order_id"]) for j in s.jobs}


def units_failed(item: Row) -> int:
    """An item's failed units; a row without the column (before units were counted) failed
    all of its quantity or none."""
    if item.get("units_failed") is not None:
        return int(item["units_failed"])
    return int(item["quantity"]) if item["status"] == "failed" else 0


def refunded_units(key: str, quantity: dict[int, int]) -> dict[int, int]:
    """The units a refund key gives back, per line: `failed-lines-n` all of line n,
    `failed-lines-nxk` k of its units; any other key (`late-payment`, `amount-mismatch`) gives
    back the whole order."""
    if not key.startswith(REFUND_KEY_PREFIX):
        return dict(quantity)
    units: dict[int, int] = {}
    for part in key.removeprefix(REFUND_KEY_PREFIX).split("-"):
        line, _, count = part.partition("x")
        units[int(line)] = int(count) if count else quantity.get(int(line), 0)
    return units
