"""`./run bench [--quick] [--out PATH]`: one run on the real topology, one table, one JSON file.

Phases: the machine's limits; then one stack for the costs per checkout, the open-loop sweeps
(credit-only and card), a profile of the busiest service, latency at half of peak and webhook
intake; then a second stack with that service doubled for the scale-out figure. Every stack is
torn down (processes, databases, broker namespace) whatever happens."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import secrets
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import limits, report, stacks
from bench.costs import measure_costs
from bench.load import LoadContext, run_step, sweep
from bench.observe import AutoPayer, OrderWatcher, connect, database_names
from bench.procs import RssSampler, read_machine_ticks
from bench.profile import profile_process
from bench.shoppers import CREDITS_PER_CHECKOUT, Shoppers
from bench.stats import (
    StepResult,
    bottleneck,
    floor_rate,
    gain,
    is_sustained,
    latency_summary,
    peak_sustained,
)
from bench.webhooks import measure_intake, seed_completed_sessions
from devstack import infra
from devstack.stack import SERVICES, Stack

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Plan:
    mode: str
    limit_seconds: float
    pg_clients: int
    rabbit_publishers: int
    cost_checkouts: int
    step_seconds: float
    start_rate: float
    factor: float
    max_steps: int
    latency_seconds: float
    webhook_seconds: float
    webhook_concurrency: int
    profile_seconds: float
    shoppers: int
    drain_limit: float


FULL = Plan("full", 5, 4, 4, 20, 6, 4, 1.6, 9, 15, 5, 32, 8, 256, 20)
QUICK = Plan("quick", 2, 4, 4, 4, 3, 6, 2.2, 3, 4, 2, 16, 3, 64, 8)
# Only the costs per checkout (deterministic, so the measure to compare code changes by on a
# busy machine): more checkouts than the full run, no limits, sweeps or second stack.
COSTS = Plan("costs", 0, 4, 4, 40, 6, 4, 1.6, 9, 15, 5, 32, 8, 64, 20)
# Only the webhook intake (phase 8 of the full run, same senders), on sessions seeded directly.
WEBHOOKS = Plan("webhooks", 0, 4, 4, 0, 6, 4, 1.6, 9, 15, 10, 32, 8, 64, 20)


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _step_line(step: StepResult) -> None:
    p99 = latency_summary(step.latencies).get("p99_ms", "n/a")
    _say(
        f"  {step.kind} {step.offered_rate:6.1f}/s offered -> {step.throughput:6.1f}/s completed, "
        f"backlog {step.backlog_slope:+.1f}/s, p99 {p99} ms: {is_sustained(step)[1]}"
    )


def _peak_json(steps: list[StepResult], floor: dict[str, Any] | None) -> dict[str, Any]:
    best = peak_sustained(steps)
    saturated = max((s.throughput for s in steps), default=None)
    floor_value = (floor or {}).get("floor")
    return {
        "peak_sustained": round(best.throughput, 2) if best else None,
        "offered_rate": round(best.offered_rate, 2) if best else None,
        "max_completed_per_s_any_step": round(saturated, 2) if saturated is not None else None,
        "ratio_to_floor": round(best.throughput / floor_value, 3) if best and floor_value else None,
        "steps": [s.to_json() for s in steps],
    }


def _stage_medians(step: StepResult, history: dict[str, dict[str, float]]) -> dict[str, float]:
    """Median milliseconds from the checkout request to each status the orders reached."""
    reached: dict[str, list[float]] = {}
    for order_id, sent_at in step.sent_at.items():
        for status, at in history.get(order_id, {}).items():
            reached.setdefault(status, []).append((at - sent_at) * 1000)
    return {
        s: round(statistics.median(v), 1)
        for s, v in sorted(reached.items(), key=lambda kv: statistics.median(kv[1]))
    }


async def main_stack(plan: Plan, stack: Stack, results: dict[str, Any], out_dir: Path) -> None:
    admin_url = infra.postgres_admin_url()
    names = database_names(stack.database_urls, SERVICES)
    http = httpx.AsyncClient(
        timeout=60, limits=httpx.Limits(max_connections=256, max_keepalive_connections=256)
    )
    shoppers = Shoppers(
        http,
        stacks.service_urls(stack, "cart"),
        stack.url("payments"),
        count=plan.shoppers,
        run_tag=stack.run_id,
    )
    watcher = OrderWatcher(stack.database_urls["orders"])
    payer = AutoPayer(stack.database_urls["payments"], stack.url("stripe_sim"))
    rss = RssSampler(lambda: stacks.pids(stack) | {"bench": os.getpid()})
    admin = await connect(admin_url)
    conns: dict[str, asyncpg.Connection] = {}
    try:
        for service in SERVICES:
            conns[service] = await connect(stack.database_urls[service])
        rss.start()
        await watcher.start()
        await payer.start()
        await shoppers.grant_all(CREDITS_PER_CHECKOUT * 100_000)

        _say(f"costs: {plan.cost_checkouts} sequential checkouts of each kind, then as long idle")
        results["costs"] = {}
        for kind in ("credit", "card"):
            results["costs"][kind] = await measure_costs(
                shoppers=shoppers, watcher=watcher, admin=admin, conns=conns, names=names,
                kind=kind, n=plan.cost_checkouts, pids=lambda: stacks.pids(stack),
            )  # fmt: skip
        if plan.mode == "costs":
            return
        _floors(results)

        ctx = LoadContext(
            shoppers, watcher, lambda: stacks.pids(stack), drain_limit=plan.drain_limit
        )
        results["throughput"] = {}
        sweeps: dict[str, list[StepResult]] = {}
        for kind in ("credit", "card"):
            _say(f"sweep {kind}: open loop from {plan.start_rate}/s, x{plan.factor} per step")
            sweeps[kind] = await sweep(
                ctx, kind, start_rate=plan.start_rate, factor=plan.factor,
                duration=plan.step_seconds, max_steps=plan.max_steps, report=_step_line,
            )  # fmt: skip
            results["throughput"][kind] = _peak_json(sweeps[kind], results["floor"].get(kind))

        hottest = max(sweeps["credit"], key=lambda s: s.offered_rate)
        busiest = bottleneck(hottest.cpu_percent, SERVICES)
        results["bottleneck"] = {
            "service": busiest,
            "step_offered_rate": round(hottest.offered_rate, 2),
            "cpu_percent": {k: round(v, 1) for k, v in hottest.cpu_percent.items()},
            "machine_cpu_percent": round(hottest.machine_cpu_percent, 1),
        }

        if busiest is not None and plan.profile_seconds > 0:
            pid = stacks.pids(stack)[busiest]
            rate = hottest.offered_rate
            _say(f"profile: py-spy on {busiest} (pid {pid}) at {rate:.1f}/s credit checkouts")
            profiled: dict[str, Any] = {}

            async def record() -> None:
                profiled.update(
                    await profile_process(
                        pid, seconds=plan.profile_seconds, out_dir=out_dir / "profile", name=busiest
                    )
                )

            step = await run_step(ctx, "credit", rate, plan.profile_seconds + 1, during=record)
            _step_line(step)
            results["profile"] = {**profiled, "step": step.to_json()}

        results["latency"] = {}
        for kind in ("credit", "card"):
            best = peak_sustained(sweeps[kind])
            rate = (best.offered_rate if best else plan.start_rate) / 2
            _say(f"latency {kind}: {rate:.1f}/s for {plan.latency_seconds:.0f}s")
            step = await run_step(ctx, kind, rate, plan.latency_seconds)
            _step_line(step)
            results["latency"][kind] = {
                "offered_rate": round(rate, 2),
                "latency": step.to_json()["latency"],
                "median_ms_from_request_to_status": _stage_medians(step, watcher.history),
                "step": step.to_json(),
            }

        _say(f"webhooks: {plan.webhook_seconds:.0f}s of signed events, 20% redeliveries")
        results["webhooks"] = await measure_intake(
            payments_urls=stacks.service_urls(stack, "payments"),
            payments_conn=conns["payments"],
            seconds=plan.webhook_seconds,
            concurrency=plan.webhook_concurrency,
        )
        results["auto_payer"] = {"paid": len(payer.paid), "errors": payer.errors}
    finally:
        await rss.stop()
        results["rss"] = rss.to_json()
        await payer.stop()
        await watcher.stop()
        for conn in conns.values():
            await conn.close()
        await admin.close()
        await http.aclose()


async def _machine_busy(seconds: float) -> float:
    before = read_machine_ticks()
    await asyncio.sleep(seconds)
    after = read_machine_ticks()
    total = after[1] - before[1]
    return round(100.0 * (after[0] - before[0]) / total, 1) if total else 0.0


def _floors(results: dict[str, Any]) -> None:
    pg = results["limits"]["postgresql"].get("commits_per_s")
    mq = results["limits"]["rabbitmq"].get("publish_consume_per_s")
    results["floor"] = {}
    for kind, cost in results["costs"].items():
        if pg and mq:
            results["floor"][kind] = floor_rate(
                commit_rate=pg,
                commits_per_checkout=cost["commits_per_checkout"],
                message_rate=mq,
                messages_per_checkout=cost["messages_published_per_checkout"],
            )


async def scale_out(plan: Plan, results: dict[str, Any], out_dir: Path) -> None:
    service = (results.get("bottleneck") or {}).get("service")
    one = (results.get("throughput") or {}).get("credit", {}).get("peak_sustained")
    offered_one = (results.get("throughput") or {}).get("credit", {}).get("offered_rate")
    section: dict[str, Any] = {"service": service, "one": one, "kind": "credit"}
    results["scale_out"] = section
    if service is None or not one:
        section["error"] = "no bottleneck or no sustained 1-replica peak to compare with"
        return
    if not stacks.supports_replicas():
        section["error"] = "stack launcher has no replicas yet"
        return
    # Same rate grid as the 1-replica sweep, entered just below its peak, so the two peaks are
    # measured on the same rungs.
    start = plan.start_rate
    while start * plan.factor <= 0.7 * offered_one:
        start *= plan.factor
    _say(f"scale-out: {service} x2, credit sweep from {start:.1f}/s")
    async with stacks.running_stack(
        infra.postgres_admin_url(), infra.rabbitmq_url(),
        log_dir=out_dir / "logs-scale-out", replicas={service: 2},
    ) as stack:  # fmt: skip
        http = httpx.AsyncClient(
            timeout=60, limits=httpx.Limits(max_connections=256, max_keepalive_connections=256)
        )
        shoppers = Shoppers(
            http, stacks.service_urls(stack, "cart"), stack.url("payments"),
            count=plan.shoppers, run_tag=stack.run_id,
        )  # fmt: skip
        watcher = OrderWatcher(stack.database_urls["orders"])
        try:
            await watcher.start()
            await shoppers.grant_all(CREDITS_PER_CHECKOUT * 100_000)
            ctx = LoadContext(
                shoppers, watcher, lambda: stacks.pids(stack), drain_limit=plan.drain_limit
            )
            steps = await sweep(
                ctx, "credit", start_rate=start, factor=plan.factor,
                duration=plan.step_seconds, max_steps=plan.max_steps, report=_step_line,
            )  # fmt: skip
        finally:
            await watcher.stop()
            await http.aclose()
    best = peak_sustained(steps)
    section["two"] = round(best.throughput, 2) if best else None
    section["gain"] = round(g, 3) if (g := gain(one, section["two"])) is not None else None
    section["steps"] = [s.to_json() for s in steps]


async def webhooks_only(plan: Plan, results: dict[str, Any], out_dir: Path) -> None:
    """The webhook intake alone on a fresh stack, sessions seeded as the card runs would leave
    them: the quick measure to compare webhook changes by."""
    _say("webhooks only: starting the stack (4 services, Stripe and panel simulators)")
    async with stacks.running_stack(
        infra.postgres_admin_url(), infra.rabbitmq_url(), log_dir=out_dir / "logs"
    ) as stack:
        conn = await connect(stack.database_urls["payments"])
        try:
            await seed_completed_sessions(conn, 200)
            results["pids"] = stacks.pids(stack)
            _say(f"webhooks: {plan.webhook_seconds:.0f}s of signed events, 20% redeliveries")
            results["webhooks"] = await measure_intake(
                payments_urls=stacks.service_urls(stack, "payments"),
                payments_conn=conn,
                seconds=plan.webhook_seconds,
                concurrency=plan.webhook_concurrency,
            )
        finally:
            await conn.close()


async def run(plan: Plan, out: Path) -> dict[str, Any]:
    started = time.monotonic()
    admin_url, rabbitmq_url = infra.postgres_admin_url(), infra.rabbitmq_url()
    out_dir = out.parent / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    results: dict[str, Any] = {
        "mode": plan.mode,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "plan": asdict(plan),
        "artifacts": str(out_dir),
    }
    try:
        if plan.mode == "webhooks":
            await webhooks_only(plan, results, out_dir)
            return results
        if plan.mode == "costs":
            _say("costs only: starting the stack (4 services, Stripe and panel simulators)")
            async with stacks.running_stack(
                admin_url, rabbitmq_url, log_dir=out_dir / "logs"
            ) as stack:
                await main_stack(plan, stack, results, out_dir)
            return results
        _say(f"limits: pgbench {plan.limit_seconds:.0f}s, RabbitMQ {plan.limit_seconds:.0f}s")
        pg = await limits.pg_commit_rate(
            admin_url, seconds=plan.limit_seconds, clients=plan.pg_clients
        )
        mq = await limits.rabbitmq_rate(
            rabbitmq_url, seconds=plan.limit_seconds, publishers=plan.rabbit_publishers
        )
        results["limits"] = {"postgresql": pg, "rabbitmq": mq}
        results["machine"] = {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "postgresql": await limits.postgres_version(admin_url),
            "rabbitmq": mq.get("server_version"),
            # Other work on the machine (another developer's stacks) skews every figure below.
            "busy_percent_before_run": await _machine_busy(1.0),
        }
        _say("starting the stack (4 services, Stripe and panel simulators)")
        async with stacks.running_stack(admin_url, rabbitmq_url, log_dir=out_dir / "logs") as stack:
            await main_stack(plan, stack, results, out_dir)
        await scale_out(plan, results, out_dir)
    except Exception as exc:
        log.exception("bench failed")
        results["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        results["elapsed_s"] = round(time.monotonic() - started, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (about 2 minutes)")
    parser.add_argument(
        "--costs-only", action="store_true",
        help="only the commits and messages per checkout (40 of each kind), about 1 minute",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "latest.json",
        help="JSON file to write (default: bench/results/latest.json)",
    )  # fmt: skip
    parser.add_argument(
        "--webhooks-only", action="store_true",
        help="only the webhook intake (10 s of signed events), about 30 seconds",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="bench: %(levelname)s %(name)s: %(message)s")
    plan = COSTS if args.costs_only else QUICK if args.quick else FULL
    if args.webhooks_only:
        plan = WEBHOOKS

    async def guarded() -> dict[str, Any]:
        # SIGTERM cancels the run like Ctrl-C does, so the stacks' teardown still runs.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run(plan, args.out)

    results = asyncio.run(guarded())
    print(report.table(results))
    report.write_json(results, args.out)
    print(f"JSON: {args.out}")
    return 1 if "error" in results else 0


if __name__ == "__main__":
    sys.exit(main())
