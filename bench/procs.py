"""Per-process readings from /proc: resident memory (VmRSS now, VmHWM the kernel's own peak) and
CPU ticks, sampled in the background so a short peak between phases is not missed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bench.stats import cpu_percent

CLK_TCK = os.sysconf("SC_CLK_TCK")


def read_status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in kB (empty once it has exited)."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def read_cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            raw = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses; fields resume after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def read_machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


@dataclass
class CpuSnapshot:
    at: float
    ticks: dict[str, int]
    machine: tuple[int, int]


def cpu_snapshot(pids: Mapping[str, int]) -> CpuSnapshot:
    ticks = {name: t for name, pid in pids.items() if (t := read_cpu_ticks(pid)) is not None}
    return CpuSnapshot(time.monotonic(), ticks, read_machine_ticks())


def cpu_between(before: CpuSnapshot, after: CpuSnapshot) -> tuple[dict[str, float], float]:
    """Per-process CPU % (100 = one core) and whole-machine busy % between two snapshots."""
    seconds = after.at - before.at
    per_process = {
        name: cpu_percent(ticks, after.ticks[name], seconds, CLK_TCK)
        for name, ticks in before.ticks.items()
        if name in after.ticks
    }
    busy = after.machine[0] - before.machine[0]
    total = after.machine[1] - before.machine[1]
    return per_process, (100.0 * busy / total if total else 0.0)


@dataclass
class RssSampler:
    """Samples VmRSS of every process every `interval` seconds and keeps the highest, and the
    last VmHWM seen (the kernel's own peak, which also covers moments between samples)."""

    pids: Callable[[], Mapping[str, int]]
    interval: float = 0.5
    peak_rss_kb: dict[str, int] = field(default_factory=dict)
    hwm_kb: dict[str, int] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        for name, pid in self.pids().items():
            status = read_status_kb(pid)
            if "VmRSS" in status:
                self.peak_rss_kb[name] = max(self.peak_rss_kb.get(name, 0), status["VmRSS"])
            if "VmHWM" in status:
                self.hwm_kb[name] = max(self.hwm_kb.get(name, 0), status["VmHWM"])

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rss-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.sample()

    def to_json(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "peak_rss_mb": round(self.peak_rss_kb.get(name, 0) / 1024, 1),
                "vm_hwm_mb": round(self.hwm_kb.get(name, 0) / 1024, 1),
            }
            for name in sorted(set(self.peak_rss_kb) | set(self.hwm_kb))
        }
