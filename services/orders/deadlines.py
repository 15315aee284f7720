"""Fires saga step deadlines. The deadline lives in the saga row, so a restarted (or another)
orders process fires it just the same; replicas share the work with SKIP LOCKED."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy import select

from services.orders.models import SagaInstance
from services.orders.saga import on_deadline
from services.orders.saga_state import Step, Timing
from services.orders.saga_store import apply_decision, state_of
from shared.db import is_postgres
from shared.messages import Contract
from shared.runtime import BackgroundTask, ServiceRuntime

log = logging.getLogger("services.orders.deadlines")


async def fire_due(runtime: ServiceRuntime, *, timing: Timing, batch: int = 50) -> int:
    """Act on every saga whose step deadline has passed; returns how many moved."""
    now = datetime.now(UTC)
    fired = 0
    async with runtime.transaction() as session:
        query = (
            select(SagaInstance)
            .where(SagaInstance.deadline_at <= now, SagaInstance.step != Step.DONE.value)
            .order_by(SagaInstance.deadline_at)
            .limit(batch)
        )
        if is_postgres(session):
            query = query.with_for_update(skip_locked=True)
        for saga in (await session.execute(query)).scalars().all():
            decision = on_deadline(state_of(saga), now=now, timing=timing)
            if decision.ignored:
                continue

            async def emit(message: Contract, order_id: str = saga.id) -> None:
                await runtime.outbox.emit(session, message, correlation_id=order_id)

            await apply_decision(session, saga, decision, now=now, emit=emit)
            log.info("deadline fired for saga %s at step %s", saga.id, state_of(saga).step)
            fired += 1
    return fired


def deadline_scheduler(timing: Timing, *, interval_seconds: float) -> BackgroundTask:
    async def fire_deadlines(runtime: ServiceRuntime) -> None:
        while True:
            try:
                await fire_due(runtime, timing=timing)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A version conflict with a reply handled at the same moment: next tick retries.
                log.warning("deadline scan failed", exc_info=True)
            await asyncio.sleep(interval_seconds)

    return fire_deadlines
