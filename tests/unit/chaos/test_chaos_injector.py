"""The injector's process faults against a stack of stand-in processes: a stop past the deadline
keeps every replica of the service down for its whole time, the supervisor included, then starts
each again; a process that exits on its own is restarted and reported."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from chaos.injector import Injector
from chaos.schedule import Fault
from devstack.stack import service_of


class StandInPopen:
    def __init__(self) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class StandInProc:
    """A process as the injector sees it: started, stopped with a signal, polled."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.popen: StandInPopen | None = None
        self.starts = 0
        self.signals: list[int] = []

    def start(self) -> None:
        self.popen = StandInPopen()
        self.starts += 1

    def stop(self, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
        self.signals.append(sig)
        if self.popen is not None:
            self.popen.returncode = -sig

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class StandInStack:
    def __init__(self, *names: str) -> None:
        self.procs = {name: StandInProc(name) for name in names}
        for proc in self.procs.values():
            proc.start()

    def instances(self, service: str) -> list[StandInProc]:
        return [p for name, p in self.procs.items() if service_of(name) == service]

    def wait_ready(self, *names: str, timeout: float = 60.0) -> None:
        pass


async def test_a_stop_past_the_deadline_keeps_every_replica_down_then_starts_each_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack = StandInStack("orders", "payments", "payments-2")
    injector = Injector(stack, admin_url="", vhost="", t0=time.monotonic())
    primed: list[str] = []

    async def at_once(service: str) -> None:  # no orders database to ask here
        primed.append(service)

    monkeypatch.setattr(injector, "_primed", at_once)
    quit_supervising = asyncio.Event()
    supervisor = asyncio.create_task(injector.supervise(quit_supervising))
    fault = Fault(0.0, "stop_past_deadline", "payments", {"down_s": 1.6})
    injecting = asyncio.create_task(injector.run([fault]))

    await asyncio.sleep(1.3)  # the supervisor polls once a second: it has looked meanwhile
    payments = [stack.procs["payments"], stack.procs["payments-2"]]
    assert not any(p.running for p in payments)
    assert [p.starts for p in payments] == [1, 1]

    await injecting
    quit_supervising.set()
    await supervisor
    assert all(p.running and p.starts == 2 for p in payments)
    assert all(p.signals == [signal.SIGTERM] for p in payments)
    assert stack.procs["orders"].starts == 1 and stack.procs["orders"].signals == []
    assert primed == ["payments"]
    assert injector.log.injected == {"stop_past_deadline": 1}
    assert injector.log.unexpected_exits == [] and injector.log.failed == []


async def test_a_process_that_exits_on_its_own_is_restarted_and_reported() -> None:
    stack = StandInStack("provisioning")
    injector = Injector(stack, admin_url="", vhost="", t0=time.monotonic())
    stack.procs["provisioning"].stop(signal.SIGSEGV)
    quit_supervising = asyncio.Event()
    supervisor = asyncio.create_task(injector.supervise(quit_supervising))
    await asyncio.sleep(0.1)
    quit_supervising.set()
    await supervisor
    assert stack.procs["provisioning"].running and stack.procs["provisioning"].starts == 2
    assert injector.log.unexpected_exits == [f"provisioning exited with {-signal.SIGSEGV}"]
