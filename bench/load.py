"""Open-loop load: checkouts start on a fixed schedule whatever happens to earlier ones (a
closed loop would slow down with the system and hide its queueing), and a sweep of rising rates
finds the highest rate the saga sustains."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench import procs
from bench.observe import OrderWatcher
from bench.shoppers import Checkout, Shoppers
from bench.stats import StepResult, Thresholds, is_sustained, next_rate, percentile, slope

log = logging.getLogger("bench.load")

KINDS = {"credit": True, "card": False}  # kind -> use_credits


@dataclass
class LoadContext:
    shoppers: Shoppers
    watcher: OrderWatcher
    pids: Callable[[], Mapping[str, int]]
    thresholds: Thresholds = field(default_factory=Thresholds)
    warmup: float = 1.0
    # How long a step's stragglers may take before the next step starts regardless.
    drain_limit: float = 20.0
    # Checkouts that never finished within drain_limit: not waited for again.
    abandoned: set[str] = field(default_factory=set)


async def run_step(
    ctx: LoadContext,
    kind: str,
    rate: float,
    duration: float,
    *,
    during: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> StepResult:
    """Offers `rate` checkouts/s of `kind` for `duration` seconds and follows them to the end."""
    use_credits = KINDS[kind]
    carts = await ctx.shoppers.make_carts(max(1, round(rate * duration)))
    if not carts:
        raise RuntimeError("no cart could be prepared; see the cart service's log")
    n = len(carts)
    duration = n / rate  # fewer carts than asked (refused connections): a shorter step
    await _settle(ctx)

    results: list[Checkout] = []
    lags: list[float] = []
    tasks: list[asyncio.Task[None]] = []
    sampled: list[tuple[float, float]] = []

    async def one(i: int) -> None:
        results.append(await ctx.shoppers.checkout(carts[i], use_credits=use_credits))

    async def sample_backlog() -> None:
        while True:
            accepted = [c.order_id for c in results if c.order_id]
            done = sum(1 for o in accepted if o in ctx.watcher.terminal)
            refused = sum(1 for c in results if c.order_id is None)
            sampled.append((time.time(), len(tasks) - done - refused))
            await asyncio.sleep(0.25)

    pids = dict(ctx.pids()) | {"bench": os.getpid()}
    wall0, t0 = time.time(), time.monotonic()
    sampler = asyncio.create_task(sample_backlog())
    side = asyncio.create_task(during()) if during is not None else None
    cpu_before: procs.CpuSnapshot | None = None
    for i in range(n):
        target = t0 + i / rate
        if cpu_before is None and target >= t0 + ctx.warmup:
            cpu_before = procs.cpu_snapshot(pids)
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(time.monotonic() - target)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.sleep(max(0.0, t0 + duration - time.monotonic()))
    cpu_after = procs.cpu_snapshot(pids)
    cpu_before = cpu_before or cpu_after
    end = wall0 + duration
    await asyncio.gather(*tasks)
    accepted = {c.order_id: c for c in results if c.order_id}
    await ctx.watcher.wait_terminal(accepted, within=ctx.drain_limit)
    sampler.cancel()
    if side is not None:
        await side
    return summarize_step(
        kind=kind,
        rate=rate,
        duration=duration,
        warmup=ctx.warmup,
        wall0=wall0,
        end=end,
        results=results,
        terminal=ctx.watcher.terminal,
        backlog=sampled,
        lags=lags,
        cpu=procs.cpu_between(cpu_before, cpu_after) if cpu_after.at > cpu_before.at else None,
    )


def summarize_step(
    *,
    kind: str,
    rate: float,
    duration: float,
    warmup: float,
    wall0: float,
    end: float,
    results: list[Checkout],
    terminal: Mapping[str, tuple[str, float]],
    backlog: list[tuple[float, float]],
    lags: list[float],
    cpu: tuple[dict[str, float], float] | None,
) -> StepResult:
    window_start = wall0 + warmup
    window = max(end - window_start, 1e-9)
    accepted = [c for c in results if c.order_id]
    finished = [(c, terminal[o]) for c in accepted if (o := c.order_id) and o in terminal]
    completed = [(c, at) for c, (status, at) in finished if status == "completed"]
    failed = (len(results) - len(accepted)) + sum(1 for _, (s, _) in finished if s != "completed")
    arrivals_in_window = sum(1 for c in results if window_start <= c.sent_at < end)
    done_in_window = sum(1 for _, at in completed if window_start <= at < end)
    all_done = len(finished) == len(accepted)
    drain_after = (
        max((at for _, (_, at) in finished), default=end) - end if all_done else float("inf")
    )
    return StepResult(
        kind=kind,
        offered_rate=rate,
        duration=duration,
        arrivals=len(results),
        accepted=len(accepted),
        failed=failed,
        throughput=done_in_window / window,
        arrival_rate=arrivals_in_window / window,
        backlog_slope=slope([(t, b) for t, b in backlog if window_start <= t < end]),
        drain_after=max(drain_after, 0.0),
        latencies=[at - c.sent_at for c, at in completed],
        sent_at={c.order_id: c.sent_at for c in accepted if c.order_id},
        cpu_percent=cpu[0] if cpu else {},
        machine_cpu_percent=cpu[1] if cpu else 0.0,
        schedule_lag_p99_ms=percentile(lags, 99) * 1000 if lags else 0.0,
    )


async def _settle(ctx: LoadContext) -> None:
    """Waits for every checkout already started to finish, so steps do not overlap."""
    started = [
        o for o in ctx.watcher.history if o not in ctx.watcher.terminal and o not in ctx.abandoned
    ]
    if started and not await ctx.watcher.wait_terminal(started, within=ctx.drain_limit):
        stuck = [o for o in started if o not in ctx.watcher.terminal]
        log.warning("%d checkouts still running before the next step", len(stuck))
        ctx.abandoned.update(stuck)


async def sweep(
    ctx: LoadContext,
    kind: str,
    *,
    start_rate: float,
    factor: float,
    duration: float,
    max_steps: int,
    report: Callable[[StepResult], None] = lambda step: None,
) -> list[StepResult]:
    """Rising rates until one is not sustained, then bisection steps (see stats.next_rate)."""
    steps: list[StepResult] = []
    rate: float | None = start_rate
    while rate is not None and len(steps) < max_steps:
        step = await run_step(ctx, kind, rate, duration)
        steps.append(step)
        report(step)
        history = [(s.offered_rate, is_sustained(s, ctx.thresholds)[0]) for s in steps]
        rate = next_rate(history, factor=factor, min_gap=0.15)
    return steps
