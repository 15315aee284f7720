"""Fires saga step deadlines. The deadline lives in the saga row, so a restarted (or another)
orders process fires it just the same; replicas share the work with SKIP LOCKED."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select

from services.orders.deps import OrdersRuntime
from services.orders.models import SagaInstance
from services.orders.saga.machine import on_deadline
from services.orders.saga.runner import emit_from, run_saga
from services.orders.saga.state import Step, Timing
from shared.db import is_postgres
from shared.periodic import every

log = logging.getLogger("services.orders.deadlines")


async def fire_due(runtime: OrdersRuntime, *, timing: Timing, batch: int = 50) -> int:
    """Act on every saga whose step deadline has passed; returns how many moved."""
    now = datetime.now(UTC)
    fired = 0
    async with runtime.transaction() as db:
        query = (
            select(SagaInstance)
            .where(SagaInstance.deadline_at <= now, SagaInstance.step != Step.DONE.value)
            .order_by(SagaInstance.deadline_at)
            .limit(batch)
        )
        if is_postgres(db):
            query = query.with_for_update(skip_locked=True)
        for saga in (await db.execute(query)).scalars().all():
            decision = await run_saga(
                db,
                saga,
                lambda state, at: on_deadline(state, now=at, timing=timing),
                emit=emit_from(db, runtime.outbox, saga_id=saga.id),
                now=now,
            )
            if decision is not None:
                log.info("deadline fired for saga %s at step %s", saga.id, saga.step)
                fired += 1
    return fired


async def _fire_deadlines(runtime: OrdersRuntime) -> None:
    await fire_due(runtime, timing=runtime.deps.timing)


def _poll_seconds(runtime: OrdersRuntime) -> float:
    return runtime.settings.deadline_poll_seconds


# A round that fails (a version conflict with a reply handled at the same moment) is simply done
# again by the next one.
deadline_scheduler = every(_poll_seconds, _fire_deadlines, name="fire deadlines")
