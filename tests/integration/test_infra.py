"""The real-infrastructure helpers themselves: databases are really created and dropped, the
broker really routes, confirms and delivers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aio_pika
import asyncpg
import pytest
from pamqp.commands import Basic
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from devstack import infra


async def _database_exists(admin_url: str, name: str) -> bool:
    conn = await asyncpg.connect(infra.asyncpg_dsn(admin_url))
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def test_create_and_drop_database(postgres_admin_url: str, run_id: str) -> None:
    name = f"cs_{run_id}_infra_probe"
    url = await infra.create_database(postgres_admin_url, name)
    try:
        assert make_url(url).database == name
        assert make_url(url).drivername == "postgresql+asyncpg"
        assert await _database_exists(postgres_admin_url, name)

        conn = await asyncpg.connect(infra.asyncpg_dsn(url))
        try:
            assert await conn.fetchval("SELECT current_database()") == name
            await conn.execute("CREATE TABLE probe (id int PRIMARY KEY, note text NOT NULL)")
            await conn.execute("INSERT INTO probe VALUES (1, 'kept')")
            assert await conn.fetchval("SELECT note FROM probe WHERE id = 1") == "kept"
        finally:
            conn.terminate()

        # Creating it again yields an empty database, not the old one.
        await infra.create_database(postgres_admin_url, name)
        conn = await asyncpg.connect(infra.asyncpg_dsn(url))
        assert await conn.fetchval("SELECT to_regclass('public.probe')") is None

        # Dropping works while a client is still connected (its backend is terminated).
        await infra.drop_database(postgres_admin_url, name)
        assert not await _database_exists(postgres_admin_url, name)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await conn.fetchval("SELECT 1")
        conn.terminate()

        # Dropping an absent database is a no-op.
        await infra.drop_database(postgres_admin_url, name)
    finally:
        await infra.drop_database(postgres_admin_url, name)


async def test_database_names_are_validated(postgres_admin_url: str) -> None:
    for bad in ("Upper", "1starts_with_digit", 'quo"te', "semi;colon", "x" * 64):
        with pytest.raises(ValueError):
            await infra.create_database(postgres_admin_url, bad)


async def test_fresh_database_fixture_gives_sqlalchemy_usable_url(
    fresh_database: Callable[[str], Awaitable[str]], run_id: str, postgres_admin_url: str
) -> None:
    url = await fresh_database("Infra-Fixture")
    name = f"cs_{run_id}_infra_fixture"
    assert make_url(url).database == name

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v int)"))
            await conn.execute(text("INSERT INTO t VALUES (41), (1)"))
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT sum(v) FROM t"))).scalar_one() == 42
            assert (await conn.execute(text("SELECT current_database()"))).scalar_one() == name
    finally:
        await engine.dispose()
    assert await _database_exists(postgres_admin_url, name)


async def test_rabbitmq_publish_confirm_consume(rabbitmq_url: str, run_id: str) -> None:
    connection = await aio_pika.connect(rabbitmq_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        # Exclusive: the broker deletes it when this connection closes.
        queue = await channel.declare_queue(f"cs_{run_id}_infra_probe", exclusive=True)

        confirmation = await channel.default_exchange.publish(
            aio_pika.Message(
                b'{"hello": "broker"}',
                content_type="application/json",
                message_id=f"probe-{run_id}",
                headers={"run_id": run_id},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=queue.name,
            mandatory=True,
            timeout=10,
        )
        assert isinstance(confirmation, Basic.Ack)

        received: list[aio_pika.abc.AbstractIncomingMessage] = []
        async with queue.iterator() as messages, asyncio.timeout(10):
            async for message in messages:
                async with message.process():
                    received.append(message)
                break

        assert len(received) == 1
        got = received[0]
        assert got.body == b'{"hello": "broker"}'
        assert got.message_id == f"probe-{run_id}"
        assert got.headers == {"run_id": run_id}
        assert got.redelivered is False

        # Acked: nothing left on the queue.
        state = await channel.declare_queue(queue.name, passive=True)
        assert state.declaration_result.message_count == 0


async def test_rabbitmq_unroutable_mandatory_publish_is_returned(
    rabbitmq_url: str, run_id: str
) -> None:
    connection = await aio_pika.connect(rabbitmq_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        with pytest.raises(aio_pika.exceptions.DeliveryError):
            await channel.default_exchange.publish(
                aio_pika.Message(b"nobody listens"),
                routing_key=f"cs_{run_id}_no_such_queue",
                mandatory=True,
                timeout=10,
            )


def test_unreachable_override_is_reported_not_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 1 on loopback: nothing listens there, so the explicit choice must fail loudly.
    monkeypatch.setenv(infra.POSTGRES_ENV, "postgresql+asyncpg://postgres@127.0.0.1:1/postgres")
    monkeypatch.setenv(infra.RABBITMQ_ENV, "amqp://guest:guest@127.0.0.1:1/")
    with pytest.raises(infra.InfraUnavailable, match=infra.POSTGRES_ENV):
        infra.postgres_admin_url()
    with pytest.raises(infra.InfraUnavailable, match=infra.RABBITMQ_ENV):
        infra.rabbitmq_url()
