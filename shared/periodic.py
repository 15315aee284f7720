"""The one periodic loop every background job of a service runs in (saga deadlines, Stripe
reconciliation and event replay, checkout-session cleanup).

A failed round is logged and the next round does the same work again: each job's round is
idempotent and safe on every replica at once, and a database or Stripe hiccup must not end the
task (it would only come back with a restart)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from shared.runtime import BackgroundTask, ServiceRuntime

log = logging.getLogger("shared.periodic")

Round = Callable[[ServiceRuntime[Any, Any]], Awaitable[object]]


def every(
    seconds: float | Callable[[ServiceRuntime[Any, Any]], float],
    round_: Round,
    *,
    name: str,
    wait_first: bool = False,
) -> BackgroundTask:
    """A background task that runs `round_(runtime)` every `seconds` until cancelled.

    `seconds` may read the runtime's settings. `wait_first` sleeps before the first round (for
    work that only matters once the service has run a while); otherwise the first round runs at
    start. `name` names the task and its log lines."""

    async def periodic(runtime: ServiceRuntime[Any, Any]) -> None:
        interval = seconds(runtime) if callable(seconds) else seconds
        if wait_first:
            await asyncio.sleep(interval)
        while True:
            try:
                await round_(runtime)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("%s round failed; next round in %.1f s", name, interval, exc_info=True)
            await asyncio.sleep(interval)

    periodic.__name__ = periodic.__qualname__ = name.replace(" ", "_")
    return periodic
