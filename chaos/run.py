"""The chaos run: the real topology under load and a seeded fault schedule, then the checker.

    ./run chaos                      # the short run CI makes (150 checkouts)
    ./run chaos --profile full       # 1,000 checkouts, every fault kind
    ./run chaos --seed 1234          # repeat a run: the same plans and the same fault schedule

Exits 0 when every invariant holds, 1 when one does not, 2 when the run itself could not be made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import secrets
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from chaos import scenarios
from chaos.client import ServiceClient
from chaos.driver import Driver, Record
from chaos.injector import Injector, rabbitmqctl
from chaos.invariants import InvariantResult, check_all
from chaos.quiesce import wait_quiet
from chaos.report import render
from chaos.schedule import (
    PROFILES,
    PROVISIONING_MAX_ATTEMPTS,
    PROVISIONING_TIMEOUT_SECONDS,
    STEP_TIMEOUT_SECONDS,
    draw,
)
from chaos.snapshot import take_snapshot
from devstack import infra
from devstack.stack import (
    JWT_SECRET,
    SERVICES,
    Stack,
    create_stack,
    drop_stack_databases,
    service_of,
)
from shared.auth import issue_token
from shared.db import make_engine

log = logging.getLogger("chaos")

DEFAULT_CHECKOUTS = {"short": 150, "full": 1000}
REPLICAS = {"orders": 2, "payments": 2}


def overrides(plans: list[scenarios.Plan]) -> dict[str, dict[str, str]]:
    """The stack's environment for this run's plans.

    Short Stripe timeouts and retries so that injected Stripe faults are recovered within the
    run; a reconciler that looks at sessions after seconds, not minutes, so dropped webhooks are
    too. Saga deadlines a stop can outlast (chaos/schedule.py). A panel that refuses the failing
    plan and builds one server of each scarce plan."""
    return {
        "orders": {
            "ORDERS_STEP_TIMEOUT_SECONDS": str(STEP_TIMEOUT_SECONDS),
            "ORDERS_PROVISIONING_TIMEOUT_SECONDS": str(PROVISIONING_TIMEOUT_SECONDS),
            "ORDERS_PROVISIONING_MAX_ATTEMPTS": str(PROVISIONING_MAX_ATTEMPTS),
        },
        "payments": {
            "PAYMENTS_STRIPE_TIMEOUT_SECONDS": "3",
            "PAYMENTS_STRIPE_RETRY_BASE_SECONDS": "0.2",
            "PAYMENTS_STRIPE_RETRY_CAP_SECONDS": "2",
            "PAYMENTS_RECONCILE_INTERVAL_SECONDS": "5",
            "PAYMENTS_RECONCILE_MIN_AGE_SECONDS": "5",
            # Refunds pending this long are asked about (webhooks get dropped in the run).
            "PAYMENTS_REFUND_RECONCILE_AFTER_SECONDS": "10",
            "PAYMENTS_STRIPE_EVENT_RETRY_SECONDS": "2",
        },
        "panel_sim": {
            "PANEL_SIM_FAIL_PLANS": scenarios.FAILING_PLANS,
            "PANEL_SIM_PLAN_CAPACITY": scenarios.panel_capacity(plans),
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="./run chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--checkouts", type=int, help="default: 150 short, 1000 full")
    parser.add_argument("--concurrency", type=int, default=24, help="shoppers at once")
    parser.add_argument("--seed", type=int, help="default: a random one, printed")
    parser.add_argument(
        "--window", type=float, help="seconds over which faults are spread (default from load)"
    )
    parser.add_argument("--quiet-within", type=float, default=300.0)
    parser.add_argument("--out", type=Path, help="directory for logs and the report")
    parser.add_argument("--keep", action="store_true", help="keep databases and vhost")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    # One line per HTTP call would bury the report.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    try:
        code = asyncio.run(run(args))
    except infra.InfraUnavailable as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        code = 2
    except FileNotFoundError as exc:
        # The broker faults and the run's own vhost need the local broker's rabbitmqctl.
        print(
            f"chaos: {exc.filename or exc} not found: the chaos run needs a local RabbitMQ "
            "with rabbitmqctl on PATH (and PostgreSQL)",
            file=sys.stderr,
        )
        code = 2
    sys.exit(code)


async def run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1, 1_000_000)
    count = args.checkouts or DEFAULT_CHECKOUTS[args.profile]
    # The load's length is roughly proportional to its size (about 3 checkouts/s under faults on
    # two cores); faults are spread over all of it.
    window = args.window or max(30.0, count * 0.35)
    run_id = f"chaos{secrets.token_hex(3)}"
    out = args.out or Path("var") / "chaos" / run_id
    admin_url = infra.postgres_admin_url()
    vhost = f"cs-{run_id}"
    await asyncio.to_thread(rabbitmqctl, "add_vhost", vhost)
    await asyncio.to_thread(rabbitmqctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    # Its own vhost: the connection-drop fault then hits this run's connections only.
    rabbitmq_url = infra.rabbitmq_url().rstrip("/") + "/" + vhost
    # Drawn before the stack exists: the panel is told the scarce plans' capacity at start.
    plans = scenarios.choose(random.Random(seed), count)
    stack = await create_stack(
        admin_url,
        rabbitmq_url,
        run_id=run_id,
        log_dir=out / "logs",
        overrides=overrides(plans),
        replicas=REPLICAS,
    )
    try:
        return await _run(stack, args, seed=seed, plans=plans, window=window, out=out)
    finally:
        await asyncio.to_thread(stack.stop)
        if not args.keep:
            await drop_stack_databases(admin_url, stack)
            await asyncio.to_thread(rabbitmqctl, "delete_vhost", vhost)


async def _run(
    stack: Stack,
    args: argparse.Namespace,
    *,
    seed: int,
    plans: list[scenarios.Plan],
    window: float,
    out: Path,
) -> int:
    admin_url = infra.postgres_admin_url()
    count = len(plans)
    await asyncio.to_thread(stack.migrate)
    await asyncio.to_thread(stack.start)
    await _add_catalogue(stack, scenarios.catalogue(plans))
    processes = [n for n in stack.procs if service_of(n) in SERVICES]
    faults = draw(seed, PROFILES[args.profile], processes, list(SERVICES), window)
    print(
        f"chaos run {stack.run_id}: profile={args.profile} seed={seed} checkouts={count} "
        f"concurrency={args.concurrency} logs={out}"
    )
    print(f"repeat with: ./run chaos --profile {args.profile} --seed {seed} --checkouts {count}")
    print("mix: " + ", ".join(f"{k}={v}" for k, v in Counter(p.scenario for p in plans).items()))
    print("fault schedule:")
    for fault in faults:
        print("  " + fault.describe())
    sys.stdout.flush()

    t0 = time.monotonic()
    injector = Injector(stack, admin_url=admin_url, vhost=stack.namespace, t0=t0)
    stop = asyncio.Event()
    supervisor = asyncio.create_task(injector.supervise(stop))
    done = Counter[str]()

    def progress(record: Record) -> None:
        done["all"] += 1
        if done["all"] % 50 == 0:
            log.info("%d/%d shoppers done", done["all"], count)

    limits = httpx.Limits(max_connections=args.concurrency * 2)
    async with httpx.AsyncClient(timeout=15, limits=limits) as http:
        client = ServiceClient(
            http, lambda s: [p.url for p in stack.instances(s)] if s in SERVICES else [stack.url(s)]
        )
        driver = Driver(
            client,
            jwt_secret=JWT_SECRET,
            operator_token=issue_token(JWT_SECRET, "chaos-operator", roles=("operator",)),
            run_tag=stack.run_id,
        )
        injecting = asyncio.create_task(injector.run(faults))
        records = await driver.run(plans, concurrency=args.concurrency, on_done=progress)
        load_seconds = time.monotonic() - t0
        _write_records(out, records)
        errors = sum(1 for r in records if r.error)
        log.info("load over after %.1fs; %d shoppers hit an error", load_seconds, errors)
        await injecting
        sim_counters = await injector.calm()

    engines = {s: make_engine(stack.database_urls[s], pool_size=1) for s in SERVICES}
    try:
        quiet, waited, last = await wait_quiet(
            engines, stack.rabbitmq_url, stack.namespace, within=args.quiet_within
        )
        stop.set()
        await supervisor
        snapshot = await take_snapshot(
            stack.database_urls, stack.rabbitmq_url, stack.namespace, stack.url("stripe_sim")
        )
        statuses = await _final_statuses(engines["orders"])
    finally:
        for engine in engines.values():
            await engine.dispose()

    results = check_all(snapshot) + run_checks(
        records,
        statuses,
        quiet=quiet,
        last_probe=str(last),
        injector=injector,
        stopped={f.target for f in faults if f.kind == "stop_past_deadline"},
    )
    faults_injected = dict(injector.log.injected)
    faults_injected.update({f"stripe_sim.{k}": v for k, v in sim_counters.items() if v})
    faults_injected["provisioning.failing_items"] = sum(
        p.lines.get(scenarios.FAILING_ITEM, 0) for p in plans
    )
    faults_injected["provisioning.sold_out_units"] = sum(
        qty - scenarios.SCARCE_CAPACITY
        for p in plans
        for item, qty in p.lines.items()
        if item.startswith(scenarios.SCARCE_PREFIX)
    )
    by_status = Counter(statuses.get(r.order_id or "", ("no order", ""))[0] for r in records)
    absorbed = _duplicates_absorbed(stack)
    report = render(
        results,
        checkouts_by_status=dict(by_status),
        faults=faults_injected,
        redeliveries=absorbed + sim_counters.get("webhook_duplicates", 0),
        dlq_count=len(snapshot.dead_letters),
        quiescence_seconds=waited,
    )
    header = (
        f"chaos run {stack.run_id} profile={args.profile} seed={seed} checkouts={count}\n"
        f"load: {load_seconds:.1f}s ({count / load_seconds:.1f} checkouts/s with faults)\n"
        f"redeliveries = messages delivered again after being applied, ignored by the inboxes "
        f"({absorbed}) + extra webhook copies the simulator sent "
        f"({sim_counters.get('webhook_duplicates', 0)})\n"
    )
    print(header + report)
    _write(
        out,
        header + report,
        json.dumps(
            {
                "run_id": stack.run_id,
                "seed": seed,
                "profile": args.profile,
                "checkouts": count,
                "load_seconds": load_seconds,
                "quiescence_seconds": waited,
                "by_status": by_status,
                "faults": faults_injected,
                "schedule": [f.describe() for f in faults],
                "invariants": [r.__dict__ for r in results],
            },
            indent=2,
            default=str,
        ),
    )
    return 0 if all(r.passed for r in results) else 1


def _duplicates_absorbed(stack: Stack) -> int:
    """Deliveries of an already-applied message, counted from the services' own log lines."""
    return sum(
        line.count('"msg": "duplicate ')
        for name, proc in stack.procs.items()
        if service_of(name) in SERVICES
        for line in proc.log_path.read_text(errors="replace").splitlines()
    )


def _write_records(out: Path, records: list[Record]) -> None:
    """What every shopper saw, kept before the checker runs (it helps when the run breaks)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "shoppers.json").write_text(
        json.dumps([r.__dict__ for r in records], indent=1, default=str)
    )


def _write(out: Path, report: str, details: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.txt").write_text(report)
    (out / "report.json").write_text(details)


async def _add_catalogue(stack: Stack, items: dict[str, dict[str, Any]]) -> None:
    token = issue_token(JWT_SECRET, "chaos-operator", roles=("operator",))
    async with httpx.AsyncClient(timeout=10) as http:
        for item_id, item in items.items():
            response = await http.put(
                stack.url("cart") + f"/catalogue/items/{item_id}",
                json=item,
                headers={"Authorization": f"Bearer {token}"},
            )
            response.raise_for_status()


async def _final_statuses(engine: Any) -> dict[str, tuple[str, str]]:
    """Each order's final status and its reason."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT id, status, status_reason FROM orders"))
        return {str(r.id): (str(r.status), str(r.status_reason or "")) for r in rows}


# Steps before payment whose deadline undoes the order (nothing is charged yet), by the service
# that owns them: a stop of that service past the step's deadline may cancel such an order.
_OWNERS_BEFORE_PAYMENT = {
    "reserving_credits": "payments",
    "creating_job": "provisioning",
    "creating_payment_session": "payments",
}


def _undone_by_a_stop(status: str, reason: str, stopped: set[str]) -> bool:
    """Cancelled at a step's deadline before payment while its owner was stopped past it."""
    step = reason.removesuffix(" timed out")
    return status == "cancelled" and _OWNERS_BEFORE_PAYMENT.get(step) in stopped


def run_checks(
    records: list[Record],
    statuses: dict[str, tuple[str, str]],
    *,
    quiet: bool,
    last_probe: str,
    injector: Injector,
    stopped: set[str],
) -> list[InvariantResult]:
    """What the shoppers and the run itself must see, beside the invariants of the data.
    `stopped`: the services a stop_past_deadline fault held down."""
    failed = [f"#{r.index} {r.scenario}: {r.error}" for r in records if r.error]
    unexpected, undone = [], []
    for r in records:
        status, reason = statuses.get(r.order_id or "", ("missing", ""))
        if r.error or status in scenarios.EXPECTED[r.scenario]:
            continue
        if _undone_by_a_stop(status, reason, stopped):
            undone.append(r.order_id)  # by design: nothing was charged (data invariants)
            continue
        unexpected.append(f"{r.order_id} ({r.scenario}: {status}: {reason})")
    stale = [
        f"#{r.index} answered {r.stale_session_answer}"
        for r in records
        if r.scenario is scenarios.Scenario.CHANGE_CART
        and r.stale_session_answer is not None
        and r.stale_session_answer < 400
    ]
    return [
        InvariantResult(
            "every shopper's calls were answered (after retries)",
            not failed,
            failed,
            f"{len(failed)} of {len(records)} shoppers hit an error",
        ),
        InvariantResult(
            "every checkout ended as its scenario must",
            not unexpected,
            unexpected,
            "expected: "
            + ", ".join(f"{k}->{'/'.join(sorted(v))}" for k, v in scenarios.EXPECTED.items())
            + f"; {len(undone)} cancelled before payment at a deadline their step's owner was"
            " stopped past",
        ),
        InvariantResult(
            "a stale checkout session is refused",
            not stale,
            stale,
            "a checkout with the session from before the cart changed must be refused",
        ),
        InvariantResult(
            "the system went quiet",
            quiet,
            [] if quiet else [last_probe],
            "orders, outboxes, queues",
        ),
        InvariantResult(
            "no process died on its own",
            not injector.log.unexpected_exits,
            injector.log.unexpected_exits,
            "only the schedule kills processes",
        ),
        InvariantResult(
            "every scheduled fault was injected",
            not injector.log.failed,
            injector.log.failed,
            "a fault that could not be injected would make the run prove less than it claims",
        ),
    ]
