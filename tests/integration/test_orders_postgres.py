"""The orders service on real PostgreSQL: concurrent replies to one saga are serialised by a row
lock, not left to fail on the version column."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from services.orders import repository
from services.orders.models import SagaInstance
from tests.support.rig import ServiceRig


async def test_a_second_reply_to_the_same_saga_waits_for_the_first_and_sees_its_result(
    orders_pg: ServiceRig,
) -> None:
    runtime = orders_pg.runtime
    now = datetime.now(UTC)
    async with runtime.transaction() as session:
        session.add(
            SagaInstance(
                id="saga-lock-1", step="reserving_credits", state={}, created_at=now, updated_at=now
            )
        )

    async def second_reply() -> str:
        async with runtime.transaction() as session:
            saga = await repository.saga_for_update(session, "saga-lock-1")
            assert saga is not None
            step = saga.step
            saga.step = "after_second"
            return step

    async with runtime.transaction() as first:
        saga = await repository.saga_for_update(first, "saga-lock-1")
        assert saga is not None
        second = asyncio.create_task(second_reply())
        await asyncio.sleep(0.5)
        # Without the row lock the second reply would have read the old row by now.
        assert not second.done()
        saga.step = "after_first"

    # It decided on the first reply's result, and both commits stand (no StaleDataError).
    assert await asyncio.wait_for(second, timeout=10) == "after_first"
    async with runtime.sessionmaker() as session:
        final = await session.get(SagaInstance, "saga-lock-1")
        assert final is not None and (final.step, final.version) == ("after_second", 3)
