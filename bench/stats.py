"""Pure arithmetic of the benchmark: percentiles, backlog trend, the sustained-rate verdict,
the floor and the bottleneck pick. No I/O, so every rule here is unit-tested."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linearly interpolated between closest ranks (numpy's
    default), so p99 of a small sample is not just its maximum."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """p50/p95/p99/mean/max in milliseconds; empty input gives only the count."""
    if not seconds:
        return {"n": 0}
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "mean_ms": round(sum(ms) / len(ms), 1),
        "max_ms": round(max(ms), 1),
    }


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x; 0 when x does not vary (one sample, or all at once)."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var_x = sum((x - mean_x) ** 2 for x, _ in points)
    if var_x == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var_x


@dataclass(frozen=True)
class Thresholds:
    """What "sustained" tolerates; loose enough for a noisy shared machine, tight enough that a
    system falling behind fails within one step."""

    # Completions per second over the steady window, as a share of what actually arrived.
    min_throughput_ratio: float = 0.9
    # Growth of the in-flight count (checkouts/s) allowed, as a share of the arrival rate.
    max_backlog_growth_ratio: float = 0.1
    # The driver itself must have kept the schedule: arrivals within this share of the offer.
    min_arrival_ratio: float = 0.9
    # Checkouts refused (non-202) or ending anywhere but `completed`.
    max_failure_ratio: float = 0.01
    # Every arrival must be completed this long after the step ends.
    drain_seconds: float = 5.0


@dataclass
class StepResult:
    """One open-loop step: what was offered, what arrived, what completed and when."""

    kind: str
    offered_rate: float
    duration: float
    arrivals: int
    accepted: int
    failed: int
    # Completions inside the steady window divided by its length.
    throughput: float
    # Arrivals inside the steady window divided by its length.
    arrival_rate: float
    backlog_slope: float
    # Seconds after the step's end until the last arrival completed (inf: some never did).
    drain_after: float
    latencies: list[float] = field(default_factory=list, repr=False)
    # order id -> when its checkout request was sent (epoch seconds), for per-status timings.
    sent_at: dict[str, float] = field(default_factory=dict, repr=False)
    cpu_percent: dict[str, float] = field(default_factory=dict)
    machine_cpu_percent: float = 0.0
    schedule_lag_p99_ms: float = 0.0

    def to_json(self) -> dict[str, object]:
        sustained, why = is_sustained(self)
        return {
            "kind": self.kind,
            "offered_rate": round(self.offered_rate, 2),
            "duration_s": self.duration,
            "arrivals": self.arrivals,
            "accepted": self.accepted,
            "failed": self.failed,
            "arrival_rate": round(self.arrival_rate, 2),
            "throughput": round(self.throughput, 2),
            "backlog_slope_per_s": round(self.backlog_slope, 2),
            "drain_after_s": None if math.isinf(self.drain_after) else round(self.drain_after, 2),
            "sustained": sustained,
            "verdict": why,
            "latency": latency_summary(self.latencies),
            "cpu_percent": {k: round(v, 1) for k, v in self.cpu_percent.items()},
            "machine_cpu_percent": round(self.machine_cpu_percent, 1),
            "schedule_lag_p99_ms": round(self.schedule_lag_p99_ms, 1),
        }


def is_sustained(step: StepResult, limits: Thresholds | None = None) -> tuple[bool, str]:
    """Whether completions kept up with arrivals and the backlog stayed flat; says why not."""
    t = limits or Thresholds()
    if step.arrivals == 0:
        return False, "no arrivals"
    if step.arrival_rate < t.min_arrival_ratio * step.offered_rate:
        return False, (
            f"driver fell behind: {step.arrival_rate:.1f}/s arrived of {step.offered_rate:.1f}/s"
        )
    if step.failed > t.max_failure_ratio * step.arrivals:
        return False, f"{step.failed} of {step.arrivals} checkouts failed"
    if step.throughput < t.min_throughput_ratio * step.arrival_rate:
        return False, (
            f"completions {step.throughput:.1f}/s < {t.min_throughput_ratio:.0%} "
            f"of arrivals {step.arrival_rate:.1f}/s"
        )
    if step.backlog_slope > t.max_backlog_growth_ratio * step.arrival_rate:
        return False, f"backlog grows {step.backlog_slope:.1f}/s"
    if step.drain_after > t.drain_seconds:
        return False, f"backlog took {step.drain_after:.1f}s to drain after the step"
    return True, "sustained"


def peak_sustained(
    steps: Sequence[StepResult], limits: Thresholds | None = None
) -> StepResult | None:
    """The sustained step with the highest completion rate (None if no step was sustained)."""
    good = [s for s in steps if is_sustained(s, limits)[0]]
    return max(good, key=lambda s: s.throughput, default=None)


def next_rate(
    history: Sequence[tuple[float, bool]], *, factor: float, min_gap: float, bisections: int = 2
) -> float | None:
    """The next offered rate of a sweep, from (rate, sustained) so far: grow by `factor` while
    sustained; after the first failure, bisect between the best sustained rate and the lowest
    failed one, `bisections` times at most, and not once they are within `min_gap` of each
    other; then stop (None)."""
    if not history:
        raise ValueError("a sweep starts from a given rate")
    first_failure = next((i for i, (_, ok) in enumerate(history) if not ok), None)
    if first_failure is None:
        return history[-1][0] * factor
    if len(history) - first_failure - 1 >= bisections:
        return None
    high = min(rate for rate, ok in history if not ok)
    passed = [rate for rate, ok in history if ok and rate < high]
    if not passed:
        return None
    low = max(passed)
    if high - low < min_gap * low:
        return None
    return (low + high) / 2


def floor_rate(
    *,
    commit_rate: float,
    commits_per_checkout: float,
    message_rate: float,
    messages_per_checkout: float,
) -> dict[str, float | str | None]:
    """`min(commit rate / commits per checkout, message rate / messages per checkout)`: the
    checkouts per second this machine's PostgreSQL and RabbitMQ would allow if the services cost
    nothing, and which of the two binds first."""
    by_db = commit_rate / commits_per_checkout if commits_per_checkout > 0 else math.inf
    by_bus = message_rate / messages_per_checkout if messages_per_checkout > 0 else math.inf
    best = min(by_db, by_bus)
    return {
        "by_commits": None if math.isinf(by_db) else round(by_db, 1),
        "by_messages": None if math.isinf(by_bus) else round(by_bus, 1),
        "floor": None if math.isinf(best) else round(best, 1),
        "limited_by": "postgresql" if by_db <= by_bus else "rabbitmq",
    }


def per_checkout(delta: float, baseline: float, checkouts: int) -> float:
    """What one checkout costs: the window's delta less the idle baseline over the same time."""
    if checkouts <= 0:
        raise ValueError("no checkouts to divide by")
    return max(delta - baseline, 0.0) / checkouts


def cpu_percent(
    ticks_before: int, ticks_after: int, seconds: float, ticks_per_second: int
) -> float:
    """CPU use of one process between two /proc/<pid>/stat readings, 100 = one core."""
    if seconds <= 0:
        return 0.0
    return 100.0 * (ticks_after - ticks_before) / ticks_per_second / seconds


def bottleneck(cpu_by_process: Mapping[str, float], services: Sequence[str]) -> str | None:
    """The service whose processes (all replicas, `orders`, `orders-2`, ...) used the most CPU."""
    totals: dict[str, float] = {}
    for name, pct in cpu_by_process.items():
        service = service_of(name)
        if service in services:
            totals[service] = totals.get(service, 0.0) + pct
    return max(totals, key=lambda s: totals[s], default=None)


def service_of(process_name: str) -> str:
    """`orders-2` -> `orders`; a name without a replica suffix is its own service."""
    base, _, suffix = process_name.rpartition("-")
    return base if base and suffix.isdigit() else process_name


def gain(one: float | None, two: float | None) -> float | None:
    """Relative throughput gain of the second replica (0.6 = +60 %)."""
    if not one or two is None:
        return None
    return two / one - 1


def settled_seq(safe_seq: int, seen: dict[int, float], *, cutoff: float) -> int:
    """The highest seq below which every row has been read: the newest seen row written before
    `cutoff` (epoch seconds), whose concurrent transactions with lower seqs have all committed."""
    old = [seq for seq, at in seen.items() if at < cutoff]
    return max([safe_seq, *old])
