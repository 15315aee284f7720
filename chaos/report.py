"""The chaos run's plain-text report, and the counts a snapshot can give it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chaos.invariants import InvariantResult
from chaos.snapshot import Snapshot

SHOWN_OFFENDERS = 10


@dataclass(frozen=True)
class SummaryCounts:
    orders_by_status: dict[str, int]
    dlq_count: int
    # None when nothing countable was available (the simulator's counters were not readable).
    redeliveries: int | None
    # What `redeliveries` is made of, by source; see summary_counts for what it leaves out.
    redelivery_sources: dict[str, int]


def summary_counts(snapshot: Snapshot) -> SummaryCounts:
    """Orders by final status, DLQ size and the redeliveries that left a trace.

    Counted: duplicate and redelivered Stripe webhooks (the simulator's fault counters, which
    `DELETE /_sim/faults` zeroes, so read them before clearing faults). Not countable after the
    fact over AMQP: broker redeliveries — the inbox absorbs a duplicate without a trace, a
    DLQ message's x-delivery-count is raised by every peek, and redelivery rates need the
    management API. The runner can add what its fault injector knows it caused.
    """
    counters = snapshot.sim_fault_counters
    sources: dict[str, int] = {}
    if counters is not None:
        sources["stripe_webhook_duplicates"] = int(counters.get("webhook_duplicates", 0))
        sources["stripe_webhook_redeliveries"] = int(counters.get("webhook_redeliveries", 0))
    return SummaryCounts(
        orders_by_status=dict(Counter(str(o["status"]) for o in snapshot.orders)),
        dlq_count=len(snapshot.dead_letters),
        redeliveries=sum(sources.values()) if counters is not None else None,
        redelivery_sources=sources,
    )


def _counts(title: str, counts: Mapping[str, int]) -> list[str]:
    total = sum(counts.values())
    lines = [f"{title} ({total})"]
    lines += [f"  {name:<24} {n}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return lines if counts else [f"{title}: none"]


def _invariant(number: int, result: InvariantResult) -> list[str]:
    verdict = "PASS" if result.passed else "FAIL"
    lines = [f"{number:>2}. {verdict} {result.name} — {result.detail}"]
    if not result.passed:
        lines.append(f"    {len(result.offenders)} offender(s):")
        lines += [f"    - {o}" for o in result.offenders[:SHOWN_OFFENDERS]]
        hidden = len(result.offenders) - SHOWN_OFFENDERS
        if hidden > 0:
            lines.append(f"    … and {hidden} more")
    return lines


def render(
    results: Sequence[InvariantResult],
    *,
    checkouts_by_status: dict[str, int],
    faults: dict[str, int],
    redeliveries: int,
    dlq_count: int,
    quiescence_seconds: float,
) -> str:
    failed = sum(not r.passed for r in results)
    lines = ["chaos run report", "================"]
    lines += _counts("checkouts by final status", checkouts_by_status)
    lines += _counts("faults injected", faults)
    lines += [
        f"redeliveries: {redeliveries}",
        f"dead-lettered messages: {dlq_count}",
        f"time to quiescence: {quiescence_seconds:.1f} s",
        "",
        "invariants",
    ]
    for number, result in enumerate(results, start=1):
        lines += _invariant(number, result)
    verdict = "ALL PASS" if not failed else f"{failed} of {len(results)} invariants FAILED"
    lines += ["", verdict]
    return "\n".join(lines) + "\n"
