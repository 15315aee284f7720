"""Starting and always tearing down a benchmark stack (processes, databases, broker namespace),
and naming its processes for the samplers."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from devstack.stack import (
    SERVICES,
    Stack,
    create_stack,
    delete_broker_namespace,
    drop_stack_databases,
)
from shared.topology import Names

log = logging.getLogger("bench.stacks")


def supports_replicas() -> bool:
    """Whether this checkout's stack launcher can run a service more than once."""
    return "replicas" in inspect.signature(create_stack).parameters


@contextlib.asynccontextmanager
async def running_stack(
    admin_url: str,
    rabbitmq_url: str,
    *,
    log_dir: Path,
    replicas: Mapping[str, int] | None = None,
) -> AsyncIterator[Stack]:
    kwargs: dict[str, object] = {"log_dir": log_dir}
    if replicas:
        if not supports_replicas():
            raise RuntimeError("devstack.stack.create_stack has no `replicas` yet")
        kwargs["replicas"] = dict(replicas)
    stack = await create_stack(admin_url, rabbitmq_url, **kwargs)  # type: ignore[arg-type]
    try:
        await asyncio.to_thread(stack.migrate)
        await asyncio.to_thread(stack.start)
        yield stack
    finally:
        # Shielded: a Ctrl-C during the run must still leave no databases or queues behind.
        await asyncio.shield(_tear_down(admin_url, rabbitmq_url, stack))


async def _tear_down(admin_url: str, rabbitmq_url: str, stack: Stack) -> None:
    await asyncio.to_thread(stack.stop)
    for step, what in (
        (drop_stack_databases(admin_url, stack), "databases"),
        (delete_broker_namespace(rabbitmq_url, Names(stack.namespace)), "broker namespace"),
    ):
        try:
            await step
        except Exception:
            log.exception("could not remove the stack's %s (run %s)", what, stack.run_id)


def pids(stack: Stack) -> dict[str, int]:
    """Every running process of the stack by name (replicas appear as `orders-2`, ...)."""
    return {
        name: proc.popen.pid
        for name, proc in stack.procs.items()
        if proc.popen is not None and proc.popen.poll() is None
    }


def service_urls(stack: Stack, service: str) -> list[str]:
    """Base URLs of every instance of a service (one without replicas)."""
    instances = getattr(stack, "instances", None)
    if callable(instances):
        return [proc.url for proc in instances(service)]
    return [stack.url(service)]


__all__ = ["SERVICES", "pids", "running_stack", "service_urls", "supports_replicas"]
