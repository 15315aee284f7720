"""What the chaos run's shoppers do: the mix of checkout scenarios and the statuses each may end in.

Pure data and choices (no I/O): the driver acts the scenarios out, the runner compares outcomes.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any


class Scenario(enum.StrEnum):
    CREDIT_ONLY = "credit_only"
    CARD = "card"
    MIXED = "mixed"  # credits pay some lines, the card the rest
    INSUFFICIENT = "insufficient"  # wants to pay with credits it does not have
    ABANDON_CANCEL = "abandon_cancel"  # walks away and cancels the order before paying
    ABANDON_EXPIRE = "abandon_expire"  # never pays; the Stripe session expires
    DELAYED_FAIL = "delayed_fail"  # a delayed payment method that fails in the end
    CHANGE_CART = "change_cart"  # changes the cart after opening a checkout session
    PROVISION_FAILS = "provision_fails"  # one of its items cannot be provisioned
    SOME_UNITS_FAIL = "some_units_fail"  # 2-3 servers of a plan the panel can build one of


# Weights of the realistic mix: most shoppers pay, a fair share do not.
MIX: dict[Scenario, int] = {
    Scenario.CREDIT_ONLY: 20,
    Scenario.CARD: 25,
    Scenario.MIXED: 12,
    Scenario.INSUFFICIENT: 8,
    Scenario.ABANDON_CANCEL: 7,
    Scenario.ABANDON_EXPIRE: 6,
    Scenario.DELAYED_FAIL: 5,
    Scenario.CHANGE_CART: 9,
    Scenario.PROVISION_FAILS: 8,
}
# Shoppers per 100 who buy servers of a scarce plan, drawn after the mix above: they take the
# place of shoppers of the first draw, so a seed's other shoppers keep the plans they drew before.
SOME_UNITS_FAIL_SHARE = 6

# Where each scenario may end, faults or not. A paid checkout may still be cancelled and refunded
# when a step legitimately runs out of time, but never silently lost.
EXPECTED: dict[Scenario, frozenset[str]] = {
    Scenario.CREDIT_ONLY: frozenset({"completed"}),
    Scenario.CARD: frozenset({"completed"}),
    Scenario.MIXED: frozenset({"completed"}),
    Scenario.INSUFFICIENT: frozenset({"cancelled"}),
    Scenario.ABANDON_CANCEL: frozenset({"cancelled"}),
    Scenario.ABANDON_EXPIRE: frozenset({"cancelled"}),
    Scenario.DELAYED_FAIL: frozenset({"cancelled"}),
    Scenario.CHANGE_CART: frozenset({"completed"}),
    Scenario.PROVISION_FAILS: frozenset({"partially_completed"}),
    Scenario.SOME_UNITS_FAIL: frozenset({"partially_completed"}),
}

# A server plan the panel simulator refuses (PANEL_SIM_FAIL_PLANS): its lines are refunded.
FAILING_ITEM = "vps-doomed"
FAILING_PLANS = FAILING_ITEM

# A server plan the panel builds one server of (PANEL_SIM_PLAN_CAPACITY), one per shopper who
# buys it: its first server is built and the others fail, whatever the other shoppers do.
SCARCE_PREFIX = "vps-scarce-"
SCARCE_CAPACITY = 1


def _server_plan(name: str) -> dict[str, Any]:
    return {
        "kind": "server_plan",
        "name": name,
        "unit_price": 1500,
        "currency": "EUR",
        "credit_price": 120,
        "units_per_item": 1,
    }


# Added to the default catalogue before the run (the default items are seeded by cart).
EXTRA_CATALOGUE: dict[str, dict[str, Any]] = {
    FAILING_ITEM: _server_plan("VPS doomed (the panel refuses it)"),
}


@dataclass(frozen=True)
class Plan:
    """One shopper's checkout: what they buy, how they pay, how many credits they own."""

    scenario: Scenario
    lines: dict[str, int]
    use_credits: bool
    credits: int


def plan(scenario: Scenario, rng: random.Random) -> Plan:
    qty = rng.randint(1, 3)
    match scenario:
        case Scenario.CREDIT_ONLY:
            return Plan(scenario, {"pkg-10": qty, "setup-job": 1}, True, 400 * qty + 250)
        case Scenario.CARD | Scenario.DELAYED_FAIL | Scenario.ABANDON_EXPIRE:
            return Plan(scenario, {"vps-small": qty, "credits-100": 1}, False, 0)
        case Scenario.MIXED:
            # credits-100 has no credit price: the card pays it, credits pay the package.
            return Plan(scenario, {"pkg-10": 1, "credits-100": qty}, True, 400)
        case Scenario.INSUFFICIENT:
            return Plan(scenario, {"pkg-10": qty}, True, 400 * qty - 1)
        case Scenario.ABANDON_CANCEL:
            return Plan(scenario, {"setup-job": qty}, False, 0)
        case Scenario.CHANGE_CART:
            return Plan(scenario, {"vps-small": 1, "pkg-10": qty}, True, 400 * (qty + 1) + 120)
        case Scenario.PROVISION_FAILS:
            # Half of them pay by card, half with credits: both refunds are exercised.
            by_credits = rng.random() < 0.5
            credits = 120 * qty + 250 if by_credits else 0
            return Plan(scenario, {FAILING_ITEM: qty, "setup-job": 1}, by_credits, credits)
    raise AssertionError(scenario)


def _some_units_fail(rng: random.Random, item: str) -> Plan:
    qty = rng.randint(2, 3)
    # Half of them pay the servers with credits (the credit pack has no credit price: the card
    # pays it), half pay all by card: both partial refunds (`nxk`) are exercised.
    by_credits = rng.random() < 0.5
    lines = {item: qty, "credits-100": 1}
    return Plan(Scenario.SOME_UNITS_FAIL, lines, by_credits, 120 * qty if by_credits else 0)


def choose(rng: random.Random, count: int) -> list[Plan]:
    """`count` plans drawn from MIX, then SOME_UNITS_FAIL_SHARE of them replaced; every scenario
    appears at least once when count allows."""
    kinds = list(MIX)
    picked = (
        kinds[:count]
        + rng.choices(kinds, weights=[MIX[k] for k in kinds], k=count)[: max(0, count - len(kinds))]
    )
    rng.shuffle(picked)
    plans = [plan(kind, rng) for kind in picked]
    _replace_some(rng, plans)
    return plans


def _replace_some(rng: random.Random, plans: list[Plan]) -> None:
    """SOME_UNITS_FAIL_SHARE of the shoppers, at random places, buy scarce servers instead; never
    the last shopper of a scenario. Each of them gets a scarce plan of its own."""
    wanted = max(1, round(len(plans) * SOME_UNITS_FAIL_SHARE / 100)) if len(plans) > len(MIX) else 0
    left = Counter(p.scenario for p in plans)
    replaced = 0
    for i in rng.sample(range(len(plans)), len(plans)):
        if replaced == wanted:
            return
        if left[plans[i].scenario] > 1:
            left[plans[i].scenario] -= 1
            replaced += 1
            plans[i] = _some_units_fail(rng, f"{SCARCE_PREFIX}{replaced}")


def catalogue(plans: list[Plan]) -> dict[str, dict[str, Any]]:
    """The items the run adds to the default catalogue: EXTRA_CATALOGUE and the plans' scarce
    server plans."""
    scarce = sorted({item for p in plans for item in p.lines if item.startswith(SCARCE_PREFIX)})
    return {
        **EXTRA_CATALOGUE,
        **{item: _server_plan(f"VPS {item} (the panel builds one)") for item in scarce},
    }


def panel_capacity(plans: list[Plan]) -> str:
    """PANEL_SIM_PLAN_CAPACITY for the plans: SCARCE_CAPACITY servers of each scarce plan."""
    return ",".join(
        f"{item}={SCARCE_CAPACITY}" for item in catalogue(plans) if item.startswith(SCARCE_PREFIX)
    )
