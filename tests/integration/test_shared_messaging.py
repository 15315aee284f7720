"""The shared messaging core on the real RabbitMQ and PostgreSQL: outbox relay, quorum queues,
inbox idempotency under redelivery, and dead-lettering of bad messages (the retry schedule and
horizon themselves: test_bus_retry.py)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aio_pika
import pytest_asyncio
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from devstack.stack import delete_broker_namespace
from shared.bus import RabbitBus
from shared.db import make_engine, make_sessionmaker
from shared.delivery import RetryPolicy
from shared.dispatch import Dispatcher, MessageContext
from shared.inbox import inbox_table
from shared.messages import Envelope
from shared.messages import contracts as c
from shared.outbox import Outbox, outbox_table
from shared.relay import OutboxRelay
from shared.topology import Names
from tests.support.waiting import eventually

metadata = MetaData()
outbox_t = outbox_table(metadata)
inbox_t = inbox_table(metadata)
applied = Table(
    "applied", metadata, Column("id", Integer, primary_key=True), Column("order_id", String(36))
)


@dataclass
class Rig:
    bus: RabbitBus
    relay: OutboxRelay
    outbox: Outbox
    names: Names
    sessionmaker: Callable[[], object]
    failures_left: dict[str, int]

    async def count_applied(self, order_id: str) -> int:
        async with self.sessionmaker() as s:  # type: ignore[attr-defined]
            return int(
                (
                    await s.execute(
                        select(func.count())
                        .select_from(applied)
                        .where(applied.c.order_id == order_id)
                    )
                ).scalar_one()
            )


@pytest_asyncio.fixture(loop_scope="session")
async def rig(
    fresh_database: Callable[[str], Awaitable[str]], rabbitmq_url: str
) -> AsyncIterator[Rig]:
    url = await fresh_database("shared_messaging")
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    sessionmaker = make_sessionmaker(engine)
    namespace = f"test-{secrets.token_hex(4)}"
    retry = RetryPolicy(backoff=(0.1, 0.2, 0.4), horizon=2.0)
    bus = RabbitBus(rabbitmq_url, namespace=namespace, prefetch=8, delivery_limit=3, retry=retry)
    await bus.start()
    outbox = Outbox(outbox_t)
    relay = OutboxRelay(sessionmaker, outbox_t, bus, idle_poll_seconds=0.2)
    failures_left: dict[str, int] = {}

    async def handle_credits_reserved(ctx: MessageContext, msg: c.CreditsReserved) -> None:
        await ctx.db.execute(insert(applied).values(order_id=msg.order_id))
        if failures_left.get(msg.order_id, 0) > 0:
            failures_left[msg.order_id] -= 1
            raise RuntimeError("transient failure")  # rolls back the insert and the inbox row

    dispatcher = Dispatcher(
        service=c.ORDERS,
        sessionmaker=sessionmaker,
        outbox=outbox,
        inbox=inbox_t,
        handlers={c.CreditsReserved: handle_credits_reserved},
        on_commit=relay.wake,
    )
    await bus.subscribe(c.ORDERS, dispatcher)
    relay_task = asyncio.create_task(relay.run())
    yield Rig(bus, relay, outbox, Names(namespace), sessionmaker, failures_left)
    relay_task.cancel()
    await bus.close()
    await delete_broker_namespace(rabbitmq_url, Names(namespace), retry_backoff=retry.backoff)
    await engine.dispose()


async def publish_via_outbox(rig: Rig, message: c.CreditsReserved) -> Envelope:
    async with rig.sessionmaker() as session, session.begin():  # type: ignore[attr-defined]
        envelope = await rig.outbox.emit(session, message, correlation_id=message.order_id)
    rig.relay.wake()
    return envelope


async def test_outbox_row_is_published_consumed_and_marked(rig: Rig) -> None:
    await publish_via_outbox(rig, c.CreditsReserved(order_id="o-1", credits=5))

    async def done() -> bool:
        return await rig.count_applied("o-1") == 1

    await eventually(done)
    async with rig.sessionmaker() as s:  # type: ignore[attr-defined]
        unpublished = (
            await s.execute(
                select(func.count()).select_from(outbox_t).where(outbox_t.c.published_at.is_(None))
            )
        ).scalar_one()
        inbox_rows = (await s.execute(select(inbox_t.c.handler))).scalars().all()
    assert unpublished == 0
    assert "orders.handle_credits_reserved" in inbox_rows


async def test_the_same_message_delivered_five_times_is_applied_once(rig: Rig) -> None:
    envelope = Envelope.wrap(c.CreditsReserved(order_id="o-dup", credits=5), correlation_id="o-dup")
    await asyncio.gather(*(rig.bus.publish(envelope) for _ in range(5)))
    await eventually(lambda: _ge(rig.count_applied("o-dup"), 1))
    await asyncio.sleep(0.5)  # give the other four copies every chance to be applied wrongly
    assert await rig.count_applied("o-dup") == 1


async def test_transient_failures_are_retried_until_applied(rig: Rig) -> None:
    rig.failures_left["o-retry"] = 2
    await publish_via_outbox(rig, c.CreditsReserved(order_id="o-retry", credits=5))
    await eventually(lambda: _ge(rig.count_applied("o-retry"), 1))
    assert rig.failures_left["o-retry"] == 0
    assert await rig.count_applied("o-retry") == 1


async def test_malformed_and_unknown_messages_go_to_the_dlq_and_the_consumer_keeps_going(
    rig: Rig,
) -> None:
    conn = await aio_pika.connect(rig.bus.url)
    async with conn:
        channel = await conn.channel()
        commands = await channel.get_exchange(rig.names.commands)
        await commands.publish(aio_pika.Message(b"not json at all"), routing_key="orders")
        bad_payload = Envelope.wrap(
            c.CreditsReserved(order_id="o-bad", credits=1), correlation_id="x"
        )
        broken = bad_payload.model_copy(update={"payload": {"order_id": 7}})
        await commands.publish(aio_pika.Message(broken.to_bytes()), routing_key="orders")
        unknown = bad_payload.model_copy(update={"type": "orders.no_such_thing", "id": "u-1"})
        await commands.publish(aio_pika.Message(unknown.to_bytes()), routing_key="orders")

    await publish_via_outbox(rig, c.CreditsReserved(order_id="o-after", credits=5))
    await eventually(lambda: _ge(rig.count_applied("o-after"), 1))

    async def three_dead() -> bool:
        return len(await rig.bus.dead_letters("orders")) >= 3

    await eventually(three_dead)
    reasons = sorted(letter.reason for letter in await rig.bus.dead_letters("orders"))
    assert any(r.startswith("not an envelope") for r in reasons)
    assert any("payload of payments.credits_reserved v1 invalid" in r for r in reasons)
    assert any("no contract orders.no_such_thing" in r for r in reasons)


async def test_a_message_that_always_fails_is_dead_lettered_after_the_retry_horizon(
    rig: Rig,
) -> None:
    rig.failures_left["o-poison"] = 1000
    await publish_via_outbox(rig, c.CreditsReserved(order_id="o-poison", credits=5))

    async def dead() -> bool:
        return any(
            letter.message_type == "payments.credits_reserved"
            and letter.reason.startswith("retry_horizon: RuntimeError: transient failure")
            for letter in await rig.bus.dead_letters("orders")
        )

    await eventually(dead, within=30)
    assert await rig.count_applied("o-poison") == 0
    # Replaying puts it back on the queue; once the fault is gone it is applied exactly once.
    rig.failures_left["o-poison"] = 0
    assert await rig.bus.replay_dead_letters("orders") >= 1
    await eventually(lambda: _ge(rig.count_applied("o-poison"), 1))
    assert await rig.count_applied("o-poison") == 1


async def _ge(value: Awaitable[int], minimum: int) -> bool:
    return await value >= minimum


async def test_backlog_counts_the_messages_waiting_in_the_named_queues(rig: Rig) -> None:
    # Nothing consumes payments in this rig: commands sent to it wait in its queue.
    before = await rig.bus.backlog([c.PAYMENTS])
    for i in range(3):
        await rig.bus.publish(
            Envelope.wrap(
                c.ReserveCredits(order_id=f"o-{i}", user_id="u", credits=1), correlation_id="t"
            )
        )

    async def three_more() -> bool:
        return await rig.bus.backlog([c.PAYMENTS]) == before + 3

    await eventually(three_more, within=10)
    assert await rig.bus.backlog([c.PAYMENTS, c.PROVISIONING]) >= before + 3
