"""The outbox hands committed envelopes to the relay, which publishes them without reading them
back and marks them published only after the broker took them; rolled-back rows never go out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import MetaData, select

from shared.db import make_engine, make_sessionmaker
from shared.messages import Envelope
from shared.messages import contracts as c
from shared.outbox import Outbox, outbox_table
from shared.relay import OutboxRelay
from tests.support.waiting import eventually

metadata = MetaData()
outbox_t = outbox_table(metadata)


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[Envelope] = []
        self.failing = False

    async def publish(self, envelope: Envelope) -> None:
        if self.failing:
            raise ConnectionError("broker away")
        self.published.append(envelope)


class Rig:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.sessionmaker = make_sessionmaker(self.engine)
        self.bus = RecordingBus()
        self.relay = OutboxRelay(
            self.sessionmaker, outbox_t, self.bus,  # type: ignore[arg-type]
            idle_poll_seconds=0.05, handover_grace_seconds=60,
        )  # fmt: skip
        self.outbox = Outbox(outbox_t, on_committed=self.relay.handover)

    async def unpublished(self) -> int:
        async with self.sessionmaker() as s:
            rows = await s.execute(select(outbox_t.c.seq).where(outbox_t.c.published_at.is_(None)))
            return len(rows.all())


@pytest_asyncio.fixture(loop_scope="session")
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = Rig(f"sqlite+aiosqlite:///{tmp_path}/outbox.db")
    async with rig.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    task = asyncio.create_task(rig.relay.run())
    yield rig
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await rig.engine.dispose()


def reserved(order_id: str) -> c.CreditsReserved:
    return c.CreditsReserved(order_id=order_id, credits=5)


async def test_committed_rows_are_handed_over_published_and_marked(rig: Rig) -> None:
    async with rig.sessionmaker() as session, session.begin():
        sent = await rig.outbox.emit(session, reserved("o-1"), correlation_id="o-1")
    await eventually(lambda: _is(rig.unpublished(), 0))
    assert [e.id for e in rig.bus.published] == [sent.id]


async def test_rolled_back_rows_are_never_published(rig: Rig) -> None:
    with pytest.raises(RuntimeError):
        async with rig.sessionmaker() as session, session.begin():
            await rig.outbox.emit(session, reserved("o-2"), correlation_id="o-2")
            raise RuntimeError("handler failed")
    async with rig.sessionmaker() as session, session.begin():
        kept = await rig.outbox.emit(session, reserved("o-3"), correlation_id="o-3")
    await eventually(lambda: _is(rig.unpublished(), 0))
    assert [e.id for e in rig.bus.published] == [kept.id]


async def test_a_failed_publish_stays_unpublished_until_the_broker_takes_it(rig: Rig) -> None:
    rig.bus.failing = True
    async with rig.sessionmaker() as session, session.begin():
        sent = await rig.outbox.emit(session, reserved("o-4"), correlation_id="o-4")
    await asyncio.sleep(0.3)
    assert await rig.unpublished() == 1  # never marked without the broker's confirm
    rig.bus.failing = False
    await eventually(lambda: _is(rig.unpublished(), 0))
    assert [e.id for e in rig.bus.published] == [sent.id]


async def _is(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]
