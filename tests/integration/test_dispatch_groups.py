"""Group commit in the dispatcher, on SQLite and on real PostgreSQL: messages that queue up while
the units of work are busy are applied together, each exactly once; a message that fails takes
only itself down (the group is rolled back and the others are applied on their own)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from shared.db import make_engine, make_sessionmaker
from shared.delivery import PermanentError
from shared.dispatch import Dispatcher, MessageContext
from shared.inbox import inbox_table
from shared.messages import Envelope
from shared.messages import contracts as c
from shared.outbox import Outbox, outbox_table

metadata = MetaData()
inbox_t = inbox_table(metadata)
outbox_t = outbox_table(metadata)
applied_t = Table(
    "applied",
    metadata,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(36), nullable=False),
)

POISON = "order-poison"


async def record(ctx: MessageContext, msg: c.CreditsReserved) -> None:
    await ctx.db.execute(insert(applied_t).values(order_id=msg.order_id))
    await ctx.emit(c.CreditsCaptured(order_id=msg.order_id, credits=msg.credits))
    if msg.order_id == POISON:
        raise PermanentError("this one can never be applied")


class Rig:
    def __init__(self, url: str, *, alone: frozenset[type[c.Contract]] = frozenset()) -> None:
        self.engine = make_engine(url)
        self.sessionmaker = make_sessionmaker(self.engine)
        self.handed: list[Envelope] = []
        self.dispatcher = Dispatcher(
            service="payments",
            sessionmaker=self.sessionmaker,
            outbox=Outbox(outbox_t, on_committed=self.handed.extend),
            inbox=inbox_t,
            handlers={c.CreditsReserved: record},  # type: ignore[dict-item]
            max_batch=8,
            max_concurrent=1,
            alone=alone,
        )

    async def count(self, table: Table) -> int:
        async with self.sessionmaker() as s:
            return int(await s.scalar(select(func.count()).select_from(table)) or 0)

    async def applied(self) -> list[str]:
        async with self.sessionmaker() as s:
            return sorted((await s.scalars(select(applied_t.c.order_id))).all())


@pytest_asyncio.fixture(loop_scope="session", params=["sqlite", "postgresql"])
async def rig(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    fresh_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[Rig]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/groups.db"
    else:
        url = await fresh_database("dispatch_groups")
    rig = Rig(url)
    async with rig.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield rig
    await rig.engine.dispose()


def _reserved(order_id: str) -> Envelope:
    return Envelope.wrap(c.CreditsReserved(order_id=order_id, credits=5), correlation_id=order_id)


async def _deliver_all(rig: Rig, envelopes: list[Envelope]) -> list[BaseException | None]:
    return list(
        await asyncio.gather(*(rig.dispatcher(e) for e in envelopes), return_exceptions=True)
    )


async def test_messages_that_queue_up_are_applied_together_each_once(rig: Rig) -> None:
    envelopes = [_reserved(f"order-{i}") for i in range(20)]
    outcomes = await _deliver_all(rig, [*envelopes, envelopes[3], envelopes[3]])
    assert outcomes == [None] * 22
    assert await rig.applied() == sorted(f"order-{i}" for i in range(20))
    assert await rig.count(inbox_t) == 20
    assert await rig.count(outbox_t) == 20
    assert len(rig.handed) == 20  # every committed reply handed to the relay, none twice
    # One unit at a time: the first message alone, the other 21 in groups of up to 8.
    assert rig.dispatcher.groups >= 2


async def test_a_failing_message_takes_only_itself_down(rig: Rig) -> None:
    envelopes = [_reserved(f"order-{i}") for i in range(5)]
    envelopes.insert(3, _reserved(POISON))
    outcomes = await _deliver_all(rig, envelopes)
    assert [type(o).__name__ if o else None for o in outcomes] == [
        None, None, None, "PermanentError", None, None
    ]  # fmt: skip
    assert await rig.applied() == sorted(f"order-{i}" for i in range(5))
    assert await rig.count(inbox_t) == 5  # the poison message's claim was rolled back too
    assert await rig.count(outbox_t) == 5
    assert sorted(e.payload["order_id"] for e in rig.handed) == sorted(
        f"order-{i}" for i in range(5)
    )
    # Delivered again (the broker's retry): the others are duplicates now, the poison fails.
    again = await _deliver_all(rig, envelopes)
    assert [type(o).__name__ if o else None for o in again] == [
        None, None, None, "PermanentError", None, None
    ]  # fmt: skip
    assert await rig.count(inbox_t) == 5


async def test_types_named_alone_are_never_grouped(tmp_path: Path) -> None:
    rig = Rig(f"sqlite+aiosqlite:///{tmp_path}/alone.db", alone=frozenset({c.CreditsReserved}))
    async with rig.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        outcomes = await _deliver_all(rig, [_reserved(f"order-{i}") for i in range(6)])
        assert outcomes == [None] * 6
        assert await rig.applied() == sorted(f"order-{i}" for i in range(6))
        assert rig.dispatcher.groups == 0  # six units of one, although they queued up
    finally:
        await rig.engine.dispose()
