"""A py-spy profile of one process while it is under load: `py-spy record` (collapsed stacks)
for the top frames, and one `py-spy dump` for what every thread is doing at a moment.

py-spy is not a project dependency: it is found on PATH, or run through `uvx py-spy`."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy_command() -> list[str] | None:
    found = shutil.which("py-spy")
    if found:
        return [found]
    uvx = shutil.which("uvx") or next(
        (str(p) for p in (Path.home() / ".local/bin/uvx",) if p.exists()), None
    )
    return [uvx, "py-spy"] if uvx else None


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """`frame;frame;... count` lines (py-spy's raw format) as (frames root-first, count)."""
    stacks: list[tuple[list[str], int]] = []
    for line in lines:
        line = line.rstrip("\n")
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def where(frame: str) -> str:
    """The package (or repo module) a frame belongs to: 'sqlalchemy', 'services/orders/...'."""
    match = FRAME.match(frame)
    path = match.group("file") if match else frame
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    for root in ("services/", "shared/"):
        if root in path:
            return root + path.split(root, 1)[1]
    if "/lib/python3" in path:
        return "stdlib/" + path.rsplit("/lib/python3", 1)[1].split("/", 1)[-1]
    return path


# Leaf frames that mean "waiting, not working": the event loop's epoll and idle worker threads.
# py-spy's own idle detection is unreliable with --nonblocking, so they are set apart here.
IDLE_LEAVES = ("select (selectors.py", "Condition.wait (threading.py", "(concurrent/futures/thread")


def is_idle(frames: list[str]) -> bool:
    return bool(frames) and any(leaf in frames[-1] for leaf in IDLE_LEAVES)


def top_frames(stacks: list[tuple[list[str], int]], limit: int = 15) -> dict[str, Any]:
    """Self and inclusive shares of the busy samples (idle ones are only counted)."""
    idle = sum(count for frames, count in stacks if is_idle(frames))
    stacks = [(frames, count) for frames, count in stacks if not is_idle(frames)]
    total = sum(count for _, count in stacks) or 1
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    for frames, count in stacks:
        if not frames:
            continue
        own[frames[-1]] += count
        by_package[where(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"frame": frame, "percent": round(100 * n / total, 1)}
            for frame, n in counter.most_common(limit)
        ]

    return {
        "samples": total,
        "idle_samples": idle,
        "self": share(own),
        "inclusive": share(inclusive),
        "self_by_package": share(by_package),
    }


async def profile_process(pid: int, *, seconds: float, out_dir: Path, name: str) -> dict[str, Any]:
    command = py_spy_command()
    if command is None:
        return {"error": "py-spy not found (install it, or have uvx on PATH)"}
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    raw = out_dir / f"{name}.collapsed.txt"
    dump_path = out_dir / f"{name}.dump.txt"
    record = await asyncio.create_subprocess_exec(
        *command, "record", "-p", str(pid), "-d", str(max(1, round(seconds))),
        "-r", "100", "--nonblocking", "--format", "raw", "-o", str(raw),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    # Halfway through, one snapshot of every thread's stack.
    await asyncio.sleep(seconds / 2)
    dump = await asyncio.create_subprocess_exec(
        *command, "dump", "-p", str(pid), "--nonblocking",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    dump_out, _ = await dump.communicate()
    dump_path.write_bytes(dump_out)
    record_out, _ = await record.communicate()
    if record.returncode != 0 or not raw.exists():
        return {"error": f"py-spy record failed: {record_out.decode(errors='replace')[-400:]}"}
    with raw.open() as f:
        summary = top_frames(parse_collapsed(f))
    return {"process": name, "pid": pid, "collapsed": str(raw), "dump": str(dump_path), **summary}
