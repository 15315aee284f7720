"""The chaos run's fault schedule and shopper mix: repeatable from the seed, and each plan funded
exactly as its scenario intends."""

from __future__ import annotations

import dataclasses
import random

import pytest

from chaos import scenarios
from chaos.scenarios import (
    EXPECTED,
    MIX,
    SCARCE_PREFIX,
    Plan,
    Scenario,
    catalogue,
    choose,
    panel_capacity,
)
from chaos.schedule import PROFILES, draw
from services.cart.bootstrap import DEFAULT_CATALOGUE

PROCESSES = ["cart", "orders", "orders-2", "payments", "payments-2", "provisioning"]
SERVICES = ["cart", "orders", "payments", "provisioning"]
DEFAULT_CREDIT_PRICE = {str(i["id"]): i["credit_price"] for i in DEFAULT_CATALOGUE}


def test_the_same_seed_draws_the_same_schedule_and_another_seed_a_different_one() -> None:
    full = PROFILES["full"]
    first = draw(42, full, PROCESSES, SERVICES, window=200)
    assert first == draw(42, full, PROCESSES, SERVICES, window=200)
    assert first != draw(43, full, PROCESSES, SERVICES, window=200)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_a_schedule_holds_every_fault_of_its_profile_in_time_order_within_the_window(
    name: str,
) -> None:
    profile = PROFILES[name]
    faults = draw(7, profile, PROCESSES, SERVICES, window=100)
    kinds = [f.kind for f in faults]
    assert kinds.count("kill") == profile.kills
    assert kinds.count("broker_drop") == profile.broker_drops
    assert kinds.count("broker_restart") == profile.broker_restarts
    assert kinds.count("pg_terminate") == profile.pg_terminations
    assert kinds.count("stripe_5xx") == profile.stripe_errors
    assert kinds.count("stripe_timeout") == profile.stripe_timeouts
    assert kinds.count("webhooks") == profile.webhook_windows
    assert sorted(f.target for f in faults if f.kind == "db_outage") == sorted(profile.db_outages)
    assert [f.at for f in faults] == sorted(f.at for f in faults)
    assert all(5 <= f.at <= 100 for f in faults)
    assert {f.target for f in faults if f.kind == "kill"} <= set(PROCESSES)
    assert {f.target for f in faults if f.kind == "pg_terminate"} <= set(SERVICES)


def test_the_full_profile_has_every_fault_kind_the_issue_names() -> None:
    kinds = {f.kind for f in draw(1, PROFILES["full"], PROCESSES, SERVICES, window=100)}
    assert kinds == {
        "kill",
        "broker_drop",
        "broker_restart",
        "pg_terminate",
        "stripe_5xx",
        "stripe_timeout",
        "webhooks",
        "db_outage",
    }


def test_the_short_run_takes_down_the_orders_database_once_and_full_runs_every_services() -> None:
    short = draw(3, PROFILES["short"], PROCESSES, SERVICES, window=50)
    [outage] = [f for f in short if f.kind == "db_outage"]
    assert outage.target == "orders"
    assert 20.0 <= outage.params["down_s"] <= 40.0  # under the stack's 60 s step deadline
    assert "db_outage" in outage.describe() and "down_s=" in outage.describe()
    full = draw(3, PROFILES["full"], PROCESSES, SERVICES, window=200)
    assert {f.target for f in full if f.kind == "db_outage"} == set(SERVICES)
    assert all(20.0 <= f.params["down_s"] <= 60.0 for f in full if f.kind == "db_outage")


def test_adding_the_outages_left_a_seeds_other_faults_as_they_were() -> None:
    profile = dataclasses.replace(PROFILES["full"], db_outages=())
    before = draw(42, profile, PROCESSES, SERVICES, window=200)
    after = draw(42, PROFILES["full"], PROCESSES, SERVICES, window=200)
    assert [f for f in after if f.kind != "db_outage"] == before


def test_every_scenario_appears_and_the_mix_is_repeatable() -> None:
    plans = choose(random.Random(5), 150)
    assert len(plans) == 150
    assert {p.scenario for p in plans} == set(Scenario)
    assert plans == choose(random.Random(5), 150)
    assert set(MIX) | {Scenario.SOME_UNITS_FAIL} == set(EXPECTED) == set(Scenario)


def test_scarce_server_buyers_take_the_place_of_some_shoppers_and_leave_the_others_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    after = choose(random.Random(2), 150)
    monkeypatch.setattr(scenarios, "_replace_some", lambda rng, plans: None)
    before = choose(random.Random(2), 150)
    changed = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if b != a]
    assert len(changed) == 9  # 6 in 100
    assert {after[i].scenario for i in changed} == {Scenario.SOME_UNITS_FAIL}
    assert Scenario.SOME_UNITS_FAIL not in {p.scenario for p in before}


def test_each_scarce_buyer_has_a_plan_of_its_own_that_the_panel_builds_one_server_of() -> None:
    plans = choose(random.Random(2), 150)
    scarce = [p for p in plans if p.scenario is Scenario.SOME_UNITS_FAIL]
    items = [next(i for i in p.lines if i.startswith(SCARCE_PREFIX)) for p in scarce]
    assert len(set(items)) == len(scarce)
    assert all(
        2 <= p.lines[i] <= 3 and p.lines["credits-100"] == 1
        for p, i in zip(scarce, items, strict=True)
    )
    assert {p.use_credits for p in scarce} == {True, False}
    assert sorted(panel_capacity(plans).split(",")) == sorted(f"{i}=1" for i in items)
    added = catalogue(plans)
    assert all(added[i]["kind"] == "server_plan" for i in items)
    assert "vps-doomed" in added


def _credits_needed(plan: Plan, credit_price: dict[str, int | None]) -> int:
    return sum((credit_price[item] or 0) * qty for item, qty in plan.lines.items())


@pytest.mark.parametrize("seed", range(20))
def test_each_plan_owns_exactly_the_credits_its_scenario_intends(seed: int) -> None:
    plans = choose(random.Random(seed), 40)
    credit_price = {
        **DEFAULT_CREDIT_PRICE,
        **{k: v["credit_price"] for k, v in catalogue(plans).items()},
    }
    for plan in plans:
        needed = _credits_needed(plan, credit_price)
        if plan.scenario is Scenario.INSUFFICIENT:
            assert plan.use_credits and plan.credits == needed - 1
        elif plan.scenario is Scenario.CHANGE_CART:
            # The shopper adds one more 10-session package after opening the session.
            assert plan.credits == needed + credit_price["pkg-10"]
        elif plan.use_credits:
            assert plan.credits == needed
        else:
            assert plan.credits == 0
