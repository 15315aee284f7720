"""Carries out the fault schedule against a running stack, and supervises its processes.

The supervisor plays the role of an orchestrator (systemd, Kubernetes): a process the schedule
killed is started again after its down time; a process that dies on its own is restarted too, and
recorded, because a service crashing by itself under these faults is a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from chaos.schedule import LEADING_STEPS, PRIME_WAIT_SECONDS, PRIMED_SAGAS, Fault
from devstack import infra
from devstack.stack import Stack

log = logging.getLogger("chaos")

STRIPE_TIMEOUT_HOLD_SECONDS = 6.0  # longer than the payments' Stripe timeout in the chaos stack
LEADING_SAGAS = "SELECT count(*) FROM saga_instances WHERE step = ANY($1::text[])"


@dataclass
class InjectionLog:
    injected: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(
        ["rabbitmqctl", "-q", *args],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
    )


class Injector:
    def __init__(self, stack: Stack, *, admin_url: str, vhost: str, t0: float) -> None:
        self._stack = stack
        self._admin_url = admin_url
        self._vhost = vhost
        self._t0 = t0
        self.log = InjectionLog()
        # Processes the schedule is holding down: the supervisor leaves them alone.
        self._held: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._broker = asyncio.Lock()

    async def run(self, faults: list[Fault]) -> None:
        await asyncio.gather(*(self._at(f) for f in faults))

    async def _at(self, fault: Fault) -> None:
        await asyncio.sleep(max(0.0, self._t0 + fault.at - time.monotonic()))
        started = time.monotonic()
        log.info("fault: %s", fault.describe())
        try:
            await self._apply(fault)
            self.log.injected[fault.kind] += 1
            log.info("fault over after %.1fs: %s", time.monotonic() - started, fault.describe())
        except Exception as exc:  # reported: a fault that could not be injected is not silent
            self.log.failed.append(f"{fault.describe()}: {type(exc).__name__}: {exc}")
            log.warning("fault failed: %s: %s", fault.describe(), exc)

    async def _apply(self, fault: Fault) -> None:
        p = fault.params
        match fault.kind:
            case "kill":
                await self._hold_down([fault.target], signal.SIGKILL, float(p["down_s"]))
            case "stop_past_deadline":
                # Stopped as an orchestrator stops a service (SIGTERM, then SIGKILL after 10 s),
                # every replica: nobody answers the saga until it is started again.
                await self._primed(fault.target)
                names = [proc.name for proc in self._stack.instances(fault.target)]
                await self._hold_down(names, signal.SIGTERM, float(p["down_s"]))
            case "broker_drop":
                async with self._broker:
                    await asyncio.to_thread(
                        rabbitmqctl, "close_all_connections", "-p", self._vhost, "chaos run"
                    )
            case "broker_restart":
                async with self._broker:
                    await asyncio.to_thread(rabbitmqctl, "stop_app")
                    try:
                        await asyncio.sleep(float(p["down_s"]))
                    finally:
                        await asyncio.to_thread(rabbitmqctl, "start_app")
                        await asyncio.to_thread(rabbitmqctl, "await_startup")
            case "pg_terminate":
                await self._terminate_backends(fault.target)
            case "db_outage":
                await self._database_outage(fault.target, float(p["down_s"]))
            case "stripe_5xx":
                rule = {"method": "POST", "path_prefix": p["path"], "count": p["count"]}
                await self._sim_faults({"api_errors": [{**rule, "status": 500}]})
            case "stripe_timeout":
                rule = {"method": "POST", "path_prefix": p["path"], "count": p["count"]}
                hold = {"delay_seconds": STRIPE_TIMEOUT_HOLD_SECONDS}
                await self._sim_faults({"timeout_after_commit": [{**rule, **hold}]})
            case "webhooks":
                await self._sim_faults(
                    {
                        "webhooks": {
                            "duplicate": p["duplicate"],
                            "delay_seconds": p["delay_s"],
                            "reorder": p["reorder"],
                            "drop_next": p["drop_next"],
                        }
                    }
                )
                await asyncio.sleep(float(p["for_s"]))
                await self._sim_faults({"webhooks": {}})
            case _:
                raise ValueError(f"unknown fault kind {fault.kind!r}")

    async def _primed(self, service: str) -> None:
        """Returns once orders holds PRIMED_SAGAS sagas about to need `service`, or after
        PRIME_WAIT_SECONDS: a stop that finds none lets no deadline pass."""
        steps = [step.value for step in LEADING_STEPS[service]]
        dsn = infra.asyncpg_dsn(self._stack.database_urls["orders"])
        started = time.monotonic()
        while time.monotonic() < started + PRIME_WAIT_SECONDS:
            # Unreachable (an orders outage) counts as none yet.
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn = await asyncpg.connect(dsn, timeout=5)
                try:
                    leading = await conn.fetchval(LEADING_SAGAS, steps)
                finally:
                    await conn.close()
                if leading >= PRIMED_SAGAS:
                    log.info(
                        "%s stops after %.1fs: %d sagas about to need it",
                        service,
                        time.monotonic() - started,
                        leading,
                    )
                    return
            await asyncio.sleep(0.25)
        log.warning("%s stops with fewer than %d sagas about to need it", service, PRIMED_SAGAS)

    async def _hold_down(self, names: list[str], sig: int, down: float) -> None:
        """Stop the processes with `sig`, keep them down for `down` seconds once they have all
        exited, then start them again. The supervisor leaves them alone meanwhile (they are held
        and locked); their locks are taken in one order, so two faults never wait on each other."""
        async with contextlib.AsyncExitStack() as locked:
            for name in sorted(names):
                await locked.enter_async_context(self._locks.setdefault(name, asyncio.Lock()))
            self._held.update(names)
            try:
                await asyncio.gather(
                    *(asyncio.to_thread(self._stack.procs[n].stop, sig) for n in names)
                )
                await asyncio.sleep(down)
                await asyncio.gather(*(self._start(n) for n in names))
            finally:
                self._held.difference_update(names)

    async def _start(self, name: str) -> None:
        """Start until ready, as an orchestrator would: a start that fails is tried again."""
        for attempt in range(1, 11):
            self._stack.procs[name].start()
            try:
                await asyncio.to_thread(self._stack.wait_ready, name, timeout=60)
                return
            except (RuntimeError, TimeoutError) as exc:
                log.warning("%s did not come up (attempt %d): %s", name, attempt, exc)
                await asyncio.to_thread(self._stack.procs[name].stop, signal.SIGKILL)
                await asyncio.sleep(min(2.0 * attempt, 10.0))
        raise RuntimeError(f"{name} could not be restarted")

    def _database(self, service: str) -> str:
        return self._stack.database_urls[service].rsplit("/", 1)[-1]

    async def _terminate_backends(self, service: str) -> None:
        await infra.terminate_connections(self._admin_url, self._database(service))

    async def _database_outage(self, service: str, down: float) -> None:
        """The service's database refuses connections for `down` seconds, its open ones cut;
        opened again whatever happens meanwhile (`infra.database_closed`)."""
        async with infra.database_closed(self._admin_url, self._database(service)):
            await asyncio.sleep(down)

    async def _sim_faults(self, body: dict[str, Any]) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(self._stack.url("stripe_sim") + "/_sim/faults", json=body)
            response.raise_for_status()

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart any service process that exited while the schedule was not holding it down."""
        while not stop.is_set():
            for name, proc in self._stack.procs.items():
                if name in self._held or proc.popen is None or proc.popen.poll() is None:
                    continue
                lock = self._locks.setdefault(name, asyncio.Lock())
                if lock.locked():
                    continue
                async with lock:
                    code = proc.popen.returncode
                    self.log.unexpected_exits.append(f"{name} exited with {code}")
                    log.error("%s exited on its own with %s; restarting it", name, code)
                    await self._start(name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def calm(self) -> dict[str, int]:
        """Remove the simulator's faults (keeping its counters) and return those counters."""
        await self._sim_faults({"api_errors": [], "timeout_after_commit": [], "webhooks": {}})
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(self._stack.url("stripe_sim") + "/_sim/faults")
            response.raise_for_status()
            body = response.json()
        counters = body.get("counters", body)
        return {k: int(v) for k, v in counters.items() if isinstance(v, int)}
