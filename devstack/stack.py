"""Runs the real topology as separate OS processes: the four services (each migrated first, any
of them with several replicas competing on its queue), the Stripe simulator and the server-panel
simulator, against real PostgreSQL and RabbitMQ. Each process logs to its own file.

Used by the end-to-end tests, the chaos run and the benchmark; developers and operators run it in
the foreground with `./run stack` (see `--help`), whose payments talks to Stripe's own API in test
mode instead of the simulator when the environment holds a Stripe test key and no API base
(`real_stripe_env`, docs/stripe.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import httpx

from devstack import infra
from services.payments.settings import STRIPE_API_BASE, StripeChoiceRefused, stripe_test_mode
from shared.delivery import DEFAULT_BACKOFF
from shared.topology import Names

SERVICES = ("cart", "orders", "payments", "provisioning")
JWT_SECRET = "stack-jwt-secret-0123456789abcdef0123"
WEBHOOK_SECRET = "whsec_stack_secret"
STRIPE_KEY = "sk_test_stack"
# Where Stripe sends the shopper after paying. Nothing in the stack serves it (a shop's own page
# would); tests read it from the hosted page's redirect.
STACK_SUCCESS_URL = (
    "http://127.0.0.1:8000/checkout/success?order={ORDER_ID}&session={CHECKOUT_SESSION_ID}"
)
# The stack runs for minutes (chaos, bench, e2e): transient failures come back within seconds,
# so a run goes quiet soon after its last fault; production waits minutes (shared/delivery.py).
STACK_RETRY_BACKOFF = (0.5, 1.0, 2.0, 4.0)


def replica_names(service: str, count: int) -> list[str]:
    return [service] + [f"{service}-{k}" for k in range(2, count + 1)]


def service_of(name: str) -> str:
    """The service a process name belongs to ("orders-2" -> "orders")."""
    base, _, k = name.rpartition("-")
    return base if base and k.isdigit() else name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(sig)
        try:
            self.popen.wait(wait)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


@dataclass
class Stack:
    run_id: str
    database_urls: dict[str, str]
    rabbitmq_url: str
    log_dir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    # Per process name, environment on top of the defaults (short timeouts, injected faults).
    # A service's name also applies to all of its replicas.
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    # Processes per service (default 1); replica k > 1 is named "<service>-<k>".
    replicas: dict[str, int] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return f"cs-{self.run_id}"

    def url(self, name: str) -> str:
        return self.procs[name].url

    def instances(self, service: str) -> list[Proc]:
        """The service's processes, replica 1 first."""
        return [self.procs[n] for n in replica_names(service, self.replicas.get(service, 1))]

    def service_env(self, service: str, port: int) -> dict[str, str]:
        p = service.upper() + "_"
        env = {
            **os.environ,
            f"{p}DATABASE_URL": self.database_urls[service],
            f"{p}BROKER_URL": self.rabbitmq_url,
            f"{p}BUS_NAMESPACE": self.namespace,
            f"{p}JWT_SECRET": JWT_SECRET,
            f"{p}HTTP_PORT": str(port),
            f"{p}RELAY_IDLE_POLL_SECONDS": "0.5",
            f"{p}RETRY_BACKOFF_SECONDS": json.dumps(STACK_RETRY_BACKOFF),
        }
        if service == "payments":
            env.update(
                PAYMENTS_STRIPE_API_KEY=STRIPE_KEY,
                PAYMENTS_STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
                PAYMENTS_STRIPE_API_BASE=self.url("stripe_sim"),
                # The simulator serves plain HTTP: this stack is a development setup and says so.
                PAYMENTS_ALLOW_INSECURE_STRIPE_BASE="true",
                PAYMENTS_CHECKOUT_SUCCESS_URL=STACK_SUCCESS_URL,
            )
        if service == "provisioning":
            env["PROVISIONING_PANEL_URL"] = self.url("panel_sim")
            # A credit grant payments has not confirmed is sent again within a chaos run, not
            # after the default's 15 minutes.
            env["PROVISIONING_GRANT_RESEND_AFTER_SECONDS"] = "20"
            env["PROVISIONING_GRANT_RESEND_POLL_SECONDS"] = "5"
        if service == "cart":
            # A lost order outcome is asked after within a run's length (production: after
            # 15 min), so chaos runs exercise the recovery (services/cart/recovery.py).
            env["CART_OUTCOME_INQUIRY_AFTER_SECONDS"] = "20"
            env["CART_OUTCOME_INQUIRY_POLL_SECONDS"] = "5"
        return env

    def prepare(self) -> None:
        """Create the processes' descriptions (ports picked now) without starting them."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        py = sys.executable
        stripe_port, panel_port = free_port(), free_port()
        self.procs["stripe_sim"] = Proc(
            "stripe_sim",
            [
                py,
                "-m",
                "simulators.stripe",
                "--host",
                "127.0.0.1",
                "--port",
                str(stripe_port),
            ],
            {
                **os.environ,
                "STRIPE_SIM_API_KEY": STRIPE_KEY,
                "STRIPE_SIM_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "STRIPE_SIM_PUBLIC_URL": f"http://127.0.0.1:{stripe_port}",
            },
            self.log_dir / "stripe_sim.log",
            stripe_port,
        )
        self.procs["panel_sim"] = Proc(
            "panel_sim",
            [
                py,
                "-m",
                "simulators.panel",
                "--host",
                "127.0.0.1",
                "--port",
                str(panel_port),
            ],
            dict(os.environ),
            self.log_dir / "panel_sim.log",
            panel_port,
        )
        for service in SERVICES:
            for name in replica_names(service, self.replicas.get(service, 1)):
                port = free_port()
                self.procs[name] = Proc(
                    name,
                    [py, "-m", f"services.{service}"],
                    self.service_env(service, port),
                    self.log_dir / f"{name}.log",
                    port,
                )
        # Like a load balancer in front of the replicas: the simulator spreads its webhook
        # attempts over them, so a retry reaches another replica when one is down.
        self.procs["stripe_sim"].env["STRIPE_SIM_WEBHOOK_URL"] = ",".join(
            f"{p.url}/webhooks/stripe" for p in self.instances("payments")
        )
        for name, env in self.overrides.items():
            targets = self.instances(name) if name in SERVICES else [self.procs[name]]
            for proc in targets:
                proc.env.update(env)

    def migrate(self) -> None:
        for service in SERVICES:
            proc = self.procs[service]
            subprocess.run(
                [sys.executable, "-m", f"services.{service}", "migrate"],
                env=proc.env,
                check=True,
                stdout=proc.log_path.open("ab"),
                stderr=subprocess.STDOUT,
            )

    def start(self, *, timeout: float = 60.0) -> None:
        for proc in self.procs.values():
            proc.start()
        self.wait_ready(timeout=timeout)

    def wait_ready(self, *names: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for name in names or tuple(self.procs):
            proc = self.procs[name]
            path = "/ready" if service_of(name) in SERVICES else "/health"
            if name == "stripe_sim":
                path = "/_sim/health"
            while True:
                if proc.popen is not None and proc.popen.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.popen.returncode}; see {proc.log_path}"
                    )
                try:
                    if httpx.get(proc.url + path, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready after {timeout}s; see {proc.log_path}")
                time.sleep(0.1)

    def restart(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.stop(sig)
        proc.start()
        self.wait_ready(name)

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()


async def create_stack(
    admin_url: str,
    rabbitmq_url: str,
    *,
    run_id: str | None = None,
    log_dir: Path | None = None,
    overrides: dict[str, dict[str, str]] | None = None,
    replicas: dict[str, int] | None = None,
    keep_data: bool = False,
) -> Stack:
    """Describe a stack on fresh databases, or on the existing ones of `run_id` with keep_data."""
    run_id = run_id or secrets.token_hex(4)
    make = infra.ensure_database if keep_data else infra.create_database
    urls = {s: await make(admin_url, f"cs_{run_id}_{s}") for s in SERVICES}
    stack = Stack(
        run_id,
        urls,
        rabbitmq_url,
        log_dir or Path("var") / "stack" / run_id,
        overrides=overrides or {},
        replicas=replicas or {},
    )
    stack.prepare()
    return stack


async def drop_stack_databases(admin_url: str, stack: Stack) -> None:
    for service in SERVICES:
        await infra.drop_database(admin_url, f"cs_{stack.run_id}_{service}")


async def delete_broker_namespace(
    url: str, names: Names, *, retry_backoff: Sequence[float] = ()
) -> None:
    """Remove a namespace's queues and exchanges (test runs share one broker), with the retry
    queues of the default backoff, the stack's and `retry_backoff` (deleting a missing queue is
    not an error)."""
    delays = (*DEFAULT_BACKOFF, *STACK_RETRY_BACKOFF, *retry_backoff)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for service in SERVICES:
            await channel.queue_delete(names.queue(service))
            await channel.queue_delete(names.dlq(service))
            for retry_queue in names.retry_queues(service, delays):
                await channel.queue_delete(retry_queue)
        for exchange in (names.events, names.commands, names.dead_letters):
            await channel.exchange_delete(exchange)


def real_stripe_env(environ: Mapping[str, str]) -> dict[str, str] | None:
    """Payments' environment for Stripe's own API in test mode, when `environ` asks for it (a
    Stripe test key and no PAYMENTS_STRIPE_API_BASE; see docs/stripe.md); None: the simulator.
    Only `./run stack` asks: the tests, chaos and bench always run on the simulator."""
    chosen = stripe_test_mode(environ)
    if chosen is None:
        return None
    return {
        "PAYMENTS_STRIPE_API_KEY": chosen.api_key,
        "PAYMENTS_STRIPE_WEBHOOK_SECRET": chosen.webhook_secret,
        "PAYMENTS_STRIPE_API_BASE": STRIPE_API_BASE,
        "PAYMENTS_ALLOW_INSECURE_STRIPE_BASE": "false",
        "PAYMENTS_CHECKOUT_SUCCESS_URL": environ.get("PAYMENTS_CHECKOUT_SUCCESS_URL")
        or STACK_SUCCESS_URL,
    }


def parse_replicas(values: list[str]) -> dict[str, int]:
    replicas: dict[str, int] = {}
    for value in values:
        service, _, count = value.partition("=")
        if service not in SERVICES or not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"expected <service>=<n> with n >= 1, got {value!r}")
        replicas[service] = int(count)
    return replicas


def main(argv: list[str] | None = None) -> None:
    """Run the stack in the foreground until Ctrl-C or SIGTERM, then stop every process."""
    parser = argparse.ArgumentParser(prog="./run stack", description=main.__doc__)
    parser.add_argument(
        "--replicas",
        nargs="*",
        default=["orders=2", "payments=2"],
        metavar="SERVICE=N",
        help="processes per service (default: orders=2 payments=2, the others 1)",
    )
    parser.add_argument(
        "--run-id",
        default="local",
        help="names the databases (cs_<id>_<service>) and the broker namespace (cs-<id>); "
        "running again with the same id keeps the data",
    )
    parser.add_argument(
        "--drop", action="store_true", help="drop the databases and broker objects on exit"
    )
    args = parser.parse_args(argv)
    replicas = parse_replicas(args.replicas)
    try:
        real_stripe = real_stripe_env(os.environ)
    except StripeChoiceRefused as exc:
        parser.exit(2, f"./run stack: {exc}\n")
    admin_url, rabbitmq_url = infra.postgres_admin_url(), infra.rabbitmq_url()
    stack = asyncio.run(
        create_stack(
            admin_url,
            rabbitmq_url,
            run_id=args.run_id,
            replicas=replicas,
            keep_data=True,
            overrides={"payments": real_stripe} if real_stripe else None,
        )
    )
    stack.migrate()
    # SIGTERM (an operator's `kill`, a supervisor) stops the children like Ctrl-C does; SIGINT
    # is set explicitly because a shell starts background jobs with it ignored.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stack.start()
        for name, proc in stack.procs.items():
            print(f"{name:14s} {proc.url}  log: {proc.log_path}", flush=True)
        print(f"broker namespace: {stack.namespace}   jwt secret: {JWT_SECRET}", flush=True)
        if real_stripe:
            hook = f"{stack.url('payments')}/webhooks/stripe"
            print(f"payments talks to Stripe in test mode: stripe listen --forward-to {hook}")
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C (or a wrapper forwarding the same signal again) must not leave
        # children behind half-stopped.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        if args.drop:
            asyncio.run(drop_stack_databases(admin_url, stack))
            asyncio.run(delete_broker_namespace(rabbitmq_url, Names(stack.namespace)))


if __name__ == "__main__":
    main()
