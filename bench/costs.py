"""What one checkout costs the infrastructure: database commits (pg_stat_database.xact_commit of
the four databases) and broker messages (outbox rows published, inbox rows consumed), over N
sequential checkouts, less an idle baseline of the same length.

The baseline matters: the relays, the deadline scheduler, the payments replay task and this
benchmark's own watcher all commit while nothing happens, and would otherwise be charged to
the checkouts. pg_stat_database counts read-only transactions too, so "commits" here is every
transaction, not only those that flush WAL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg

from bench.observe import DbCounters, OrderWatcher, counters_delta, db_counters
from bench.procs import CLK_TCK, CpuSnapshot, cpu_snapshot
from bench.shoppers import Shoppers
from bench.stats import per_checkout

# PostgreSQL 15 backends flush their statistics at most once a second while busy, but a backend
# that goes idle flushes only after PGSTAT_IDLE_INTERVAL (10 s): with a 2.5 s wait, counts of one
# window (the shoppers' grants, the credit checkouts) turned up in the next.
STATS_SETTLE_SECONDS = 11.0


async def _reading(
    admin: asyncpg.Connection, conns: dict[str, asyncpg.Connection], names: dict[str, str]
) -> dict[str, DbCounters]:
    await asyncio.sleep(STATS_SETTLE_SECONDS)
    return await db_counters(admin, conns, names)


async def measure_costs(
    *,
    shoppers: Shoppers,
    watcher: OrderWatcher,
    admin: asyncpg.Connection,
    conns: dict[str, asyncpg.Connection],
    names: dict[str, str],
    kind: str,
    n: int,
    pids: Callable[[], Mapping[str, int]],
) -> dict[str, Any]:
    """N checkouts one after another (each waits for `completed`), then the same time idle."""
    use_credits = kind == "credit"
    carts = await shoppers.make_carts(n)
    before = await _reading(admin, conns, names)
    cpu_before = cpu_snapshot(pids())
    started = time.monotonic()
    failures = 0
    for cart in carts:
        checkout = await shoppers.checkout(cart, use_credits=use_credits)
        if checkout.order_id is None or not await watcher.wait_terminal(
            [checkout.order_id], within=30
        ):
            failures += 1
            continue
        if watcher.terminal[checkout.order_id][0] != "completed":
            failures += 1
    busy_seconds = time.monotonic() - started
    # Outboxes are drained and inboxes written within the settle pause that _reading starts with.
    after = await _reading(admin, conns, names)
    cpu_after = cpu_snapshot(pids())
    idle_before = after
    await asyncio.sleep(busy_seconds)
    idle_after = await _reading(admin, conns, names)
    cpu_idle_after = cpu_snapshot(pids())

    busy = counters_delta(before, after)
    idle = counters_delta(idle_before, idle_after)
    per: dict[str, dict[str, float]] = {
        service: {
            metric: round(per_checkout(busy[service][metric], idle[service][metric], n), 2)
            for metric in busy[service]
        }
        for service in busy
    }

    def total(metric: str) -> float:
        return round(sum(per[s][metric] for s in per), 2)

    return {
        "kind": kind,
        "checkouts": n,
        "failures": failures,
        "window_s": round(busy_seconds, 2),
        "commits_per_checkout": total("xact_commit"),
        "rollbacks_per_checkout": total("xact_rollback"),
        "rows_written_per_checkout": total("rows_written"),
        "messages_published_per_checkout": total("outbox_rows"),
        "messages_consumed_per_checkout": total("inbox_rows"),
        "per_service": per,
        "cpu_ms_per_checkout": cpu_ms_per_checkout(cpu_before, cpu_after, cpu_idle_after, n),
        "idle_baseline": idle,
        "measured_delta": busy,
    }


def cpu_ms_per_checkout(
    before: CpuSnapshot, after: CpuSnapshot, idle_after: CpuSnapshot, n: int
) -> dict[str, float]:
    """CPU milliseconds each process spent per checkout, less what it spends idle over as long
    (the idle window starts at `after` and lasts about as long as the busy one)."""
    ms_per_tick = 1000 / CLK_TCK
    found: dict[str, float] = {}
    for name, start in before.ticks.items():
        if name not in after.ticks or name not in idle_after.ticks:
            continue  # restarted or gone: its ticks are not comparable
        busy = after.ticks[name] - start
        idle = idle_after.ticks[name] - after.ticks[name]
        found[name] = round(per_checkout(busy * ms_per_tick, idle * ms_per_tick, n), 1)
    found["total"] = round(sum(found.values()), 1)
    return found
