"""The benchmark's arithmetic: percentiles, the sustained verdict, the sweep's next rate, the
floor and the bottleneck pick."""

from __future__ import annotations

import math

import pytest

from bench.stats import (
    StepResult,
    bottleneck,
    cpu_percent,
    floor_rate,
    gain,
    is_sustained,
    latency_summary,
    next_rate,
    peak_sustained,
    per_checkout,
    percentile,
    service_of,
    settled_seq,
    slope,
)


def step(**overrides: object) -> StepResult:
    values: dict[str, object] = dict(
        kind="credit", offered_rate=20.0, duration=6.0, arrivals=120, accepted=120, failed=0,
        throughput=19.5, arrival_rate=20.0, backlog_slope=0.2, drain_after=0.4,
    )  # fmt: skip
    values.update(overrides)
    return StepResult(**values)  # type: ignore[arg-type]


def test_percentiles_interpolate_between_ranks_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0, 1.0, 2.0], 0) == 1.0 and percentile([3.0, 1.0, 2.0], 100) == 3.0
    assert percentile([7.0], 95) == 7.0


def test_percentile_refuses_nothing_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary_is_in_milliseconds() -> None:
    summary = latency_summary([0.1, 0.2, 0.3])
    assert summary["n"] == 3 and summary["p50_ms"] == 200.0 and summary["max_ms"] == 300.0
    assert latency_summary([]) == {"n": 0}


def test_slope_of_a_growing_backlog() -> None:
    assert slope([(0.0, 0.0), (1.0, 5.0), (2.0, 10.0)]) == pytest.approx(5.0)
    assert slope([(0.0, 3.0), (1.0, 3.0)]) == 0.0
    assert slope([(1.0, 3.0)]) == 0.0 and slope([(1.0, 1.0), (1.0, 9.0)]) == 0.0


def test_a_step_that_keeps_up_is_sustained() -> None:
    assert is_sustained(step()) == (True, "sustained")


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"throughput": 12.0}, "completions"),
        ({"backlog_slope": 4.0}, "backlog grows"),
        ({"drain_after": math.inf}, "to drain"),
        ({"failed": 5}, "failed"),
        ({"arrival_rate": 15.0, "throughput": 15.0}, "driver fell behind"),
        ({"arrivals": 0}, "no arrivals"),
    ],
)
def test_a_step_falling_behind_is_not_sustained_and_says_why(
    overrides: dict[str, object], why: str
) -> None:
    sustained, reason = is_sustained(step(**overrides))
    assert not sustained and why in reason


def test_peak_is_the_best_sustained_step_not_the_best_overall() -> None:
    low = step(offered_rate=10, arrival_rate=10, throughput=10)
    mid = step(offered_rate=20, arrival_rate=20, throughput=19.8)
    overloaded = step(offered_rate=40, arrival_rate=40, throughput=25, backlog_slope=15)
    assert peak_sustained([low, mid, overloaded]) is mid
    assert peak_sustained([overloaded]) is None


def test_sweep_grows_then_bisects_between_best_sustained_and_lowest_failed_then_stops() -> None:
    sweep = [(4, True), (8, True), (16, False)]
    assert next_rate([(4, True)], factor=2, min_gap=0.05) == 8
    assert next_rate(sweep, factor=2, min_gap=0.05) == 12
    assert next_rate([*sweep, (12, True)], factor=2, min_gap=0.05) == 14
    assert next_rate([*sweep, (12, False)], factor=2, min_gap=0.05) == 10
    # Two bisections by default, then a stop whatever they found.
    assert next_rate([*sweep, (12, True), (14, False)], factor=2, min_gap=0.05) is None
    assert next_rate([*sweep, (12, True)], factor=2, min_gap=0.05, bisections=1) is None
    # Nothing sustained at all: no bisection below the first rung.
    assert next_rate([(4, False)], factor=2, min_gap=0.05) is None
    # Already close: bisecting would not tell anything new.
    assert next_rate([(10, True), (11, False)], factor=2, min_gap=0.15) is None


def test_floor_is_bound_by_the_scarcer_resource() -> None:
    found = floor_rate(
        commit_rate=4000, commits_per_checkout=20, message_rate=1000, messages_per_checkout=10
    )
    assert found == {
        "by_commits": 200.0, "by_messages": 100.0, "floor": 100.0, "limited_by": "rabbitmq",
    }  # fmt: skip
    db_bound = floor_rate(
        commit_rate=1000, commits_per_checkout=20, message_rate=1000, messages_per_checkout=10
    )
    assert db_bound["floor"] == 50.0 and db_bound["limited_by"] == "postgresql"


def test_cost_per_checkout_subtracts_the_idle_baseline() -> None:
    assert per_checkout(230, 30, 20) == 10.0
    assert per_checkout(10, 30, 20) == 0.0  # noise never makes a checkout free of negative cost
    with pytest.raises(ValueError):
        per_checkout(1, 0, 0)


def test_bottleneck_adds_up_replicas_and_ignores_helpers() -> None:
    cpu = {"orders": 40.0, "orders-2": 35.0, "payments": 60.0, "bench": 90.0, "stripe_sim": 70.0}
    assert bottleneck(cpu, ("cart", "orders", "payments", "provisioning")) == "orders"
    assert service_of("orders-2") == "orders" and service_of("stripe_sim") == "stripe_sim"
    assert bottleneck({}, ("orders",)) is None


def test_cpu_percent_and_replica_gain() -> None:
    assert cpu_percent(100, 300, 2.0, 100) == 100.0
    assert cpu_percent(1, 2, 0.0, 100) == 0.0
    assert gain(50.0, 80.0) == pytest.approx(0.6)
    assert gain(None, 80.0) is None and gain(50.0, None) is None


def test_the_watcher_only_trusts_sequence_numbers_of_rows_older_than_the_settle_time() -> None:
    seen = {10: 100.0, 11: 104.0, 12: 103.0}
    assert settled_seq(5, seen, cutoff=103.5) == 12  # 12 is old enough, 11 is not yet
    assert settled_seq(5, seen, cutoff=99.0) == 5  # nothing settled: keep the old mark
    assert settled_seq(5, {}, cutoff=1e12) == 5
