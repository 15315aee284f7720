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
from chaos.schedule import (
    PRIME_WAIT_SECONDS,
    PROFILES,
    PROVISIONING_MAX_ATTEMPTS,
    PROVISIONING_TIMEOUT_SECONDS,
    SETTLE_SECONDS,
    STEP_TIMEOUT_SECONDS,
    draw,
)
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
    stops = sorted(f.target for f in faults if f.kind == "stop_past_deadline")
    assert stops == sorted(profile.stops_past_deadline)
    assert [f.at for f in faults] == sorted(f.at for f in faults)
    # A stop keeps clear of the long silences drawn before it, past the window if need be.
    assert all(5 <= f.at <= 100 for f in faults if f.kind != "stop_past_deadline")
    assert all(5 <= f.at for f in faults)
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
        "stop_past_deadline",
    }


def test_the_short_run_takes_down_the_orders_database_once_and_full_runs_every_services() -> None:
    short = draw(3, PROFILES["short"], PROCESSES, SERVICES, window=50)
    [outage] = [f for f in short if f.kind == "db_outage"]
    assert outage.target == "orders"
    assert 20.0 <= outage.params["down_s"] <= 40.0  # well under the step deadline
    assert "db_outage" in outage.describe() and "down_s=" in outage.describe()
    full = draw(3, PROFILES["full"], PROCESSES, SERVICES, window=200)
    assert {f.target for f in full if f.kind == "db_outage"} == set(SERVICES)
    assert all(20.0 <= f.params["down_s"] <= 60.0 for f in full if f.kind == "db_outage")


@pytest.mark.parametrize("added", [("stop_past_deadline",), ("db_outage", "stop_past_deadline")])
def test_adding_a_fault_kind_left_a_seeds_other_faults_as_they_were(added: tuple[str, ...]) -> None:
    field = {"db_outage": "db_outages", "stop_past_deadline": "stops_past_deadline"}
    profile = dataclasses.replace(PROFILES["full"], **{field[kind]: () for kind in added})
    before = draw(42, profile, PROCESSES, SERVICES, window=200)
    after = draw(42, PROFILES["full"], PROCESSES, SERVICES, window=200)
    assert [f for f in after if f.kind not in added] == before


def test_a_stop_outlasts_the_deadline_of_the_step_its_service_owns() -> None:
    """Provisioning stopped past the provisioning step's last deadline (timeout x attempts), yet
    back, with its restart, well before a job creation's deadline; payments stopped past its
    steps' deadline."""
    given_up_after = PROVISIONING_TIMEOUT_SECONDS * PROVISIONING_MAX_ATTEMPTS
    for seed in range(30):
        short = draw(seed, PROFILES["short"], PROCESSES, SERVICES, window=50)
        full = draw(seed, PROFILES["full"], PROCESSES, SERVICES, window=200)
        [stop] = [f for f in short if f.kind == "stop_past_deadline"]
        assert stop.target == "provisioning"
        stops = {f.target: f.params["down_s"] for f in full if f.kind == "stop_past_deadline"}
        assert set(stops) == {"payments", "provisioning"}
        for down in (stop.params["down_s"], stops["provisioning"]):
            assert given_up_after + 8 <= down <= STEP_TIMEOUT_SECONDS - SETTLE_SECONDS - 20
        assert stops["payments"] >= STEP_TIMEOUT_SECONDS + 8
    assert "stop_past_deadline provisioning" in stop.describe() and "down_s=" in stop.describe()


@pytest.mark.parametrize(("name", "window"), [("short", 52.5), ("short", 105), ("full", 350)])
def test_a_stop_keeps_clear_of_the_other_long_silences(name: str, window: float) -> None:
    """Else they hide it or add up with it: a stop under an orders outage shows orders no
    silence; an orders outage parking the stopped service's backlog, or another silence under
    way when it is back, lets the orders waiting since the stop began pass the step deadline."""
    for seed in range(200):
        faults = draw(seed, PROFILES[name], PROCESSES, SERVICES, window=window)
        silences = [f for f in faults if f.kind in ("db_outage", "stop_past_deadline")]
        for stop in (f for f in silences if f.kind == "stop_past_deadline"):
            # It strikes up to PRIME_WAIT_SECONDS after it is due.
            due, down = stop.at, stop.params["down_s"]
            first_back, last_back = round(due + down, 1), round(due + PRIME_WAIT_SECONDS + down, 1)
            for other in (f for f in silences if f is not stop):
                late = PRIME_WAIT_SECONDS if other.kind == "stop_past_deadline" else 0
                begins, ends = other.at, round(other.at + late + other.params["down_s"], 1)
                context = (seed, stop, other)
                if other.kind == "db_outage" and other.target == "orders":
                    assert not (begins <= due + PRIME_WAIT_SECONDS and ends > due), context
                    parks = begins < last_back + SETTLE_SECONDS
                    assert not (parks and ends > due + STEP_TIMEOUT_SECONDS - 10), context
                else:
                    assert not (begins < last_back + SETTLE_SECONDS and ends > first_back), context


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
