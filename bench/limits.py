"""The machine's own limits, measured before the saga runs: how many single-row commits per
second this PostgreSQL takes (pgbench), and how many messages per second this RabbitMQ carries
from publisher (with confirms) to a manually-acking consumer on a durable quorum queue."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
from sqlalchemy.engine import make_url

from devstack import infra

INSERT_SCRIPT = "INSERT INTO bench_commit (payload) VALUES ('0123456789abcdef0123456789abcdef');\n"


def find_pgbench() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)
    return candidates[0] if candidates else None


def parse_pgbench_tps(output: str) -> float:
    """The tps line of pgbench's summary (newer versions say "without initial connection
    time", older "excluding connections establishing")."""
    for pattern in (r"tps = ([\d.]+) \(without initial", r"tps = ([\d.]+) \(excluding"):
        match = re.search(pattern, output)
        if match:
            return float(match.group(1))
    match = re.search(r"tps = ([\d.]+)", output)
    if match is None:
        raise ValueError(f"no tps in pgbench output:\n{output}")
    return float(match.group(1))


async def postgres_version(admin_url: str) -> str:
    conn = await asyncpg.connect(infra.asyncpg_dsn(admin_url), timeout=10)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def pg_commit_rate(admin_url: str, *, seconds: float, clients: int) -> dict[str, Any]:
    """Single-row INSERT commits per second into a throwaway table of a throwaway database."""
    pgbench = find_pgbench()
    if pgbench is None:
        return {"error": "pgbench not found on PATH or under /usr/lib/postgresql/*/bin"}
    name = f"bench_pgbench_{secrets.token_hex(4)}"
    db_url = await infra.create_database(admin_url, name)
    try:
        conn = await asyncpg.connect(infra.asyncpg_dsn(db_url), timeout=10)
        try:
            await conn.execute(
                "CREATE TABLE bench_commit (id bigserial PRIMARY KEY, payload text NOT NULL)"
            )
        finally:
            await conn.close()
        url = make_url(db_url)
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "insert.sql"
            script.write_text(INSERT_SCRIPT)
            argv = [
                pgbench,
                "-n",  # no vacuum of pgbench's own tables: there are none
                "-c", str(clients),
                "-j", str(min(clients, 2)),
                "-T", str(max(1, round(seconds))),
                "-f", str(script),
                "-h", url.host or "127.0.0.1",
                "-p", str(url.port or 5432),
                "-U", url.username or "postgres",
                name,
            ]  # fmt: skip
            env = {"PGPASSWORD": url.password} if url.password else {}
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **env},
            )
            out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            return {"error": f"pgbench exited {proc.returncode}: {text[-500:]}"}
        return {
            "commits_per_s": round(parse_pgbench_tps(text), 1),
            "clients": clients,
            "seconds": max(1, round(seconds)),
            "pgbench": pgbench,
        }
    finally:
        await infra.drop_database(admin_url, name)


async def rabbitmq_rate(
    url: str, *, seconds: float, publishers: int, in_flight: int = 16
) -> dict[str, Any]:
    """Messages per second published (each confirmed) and consumed (each acked) through one
    durable quorum queue: `publishers` concurrent channels, each keeping `in_flight` unconfirmed
    publishes, as the outbox relay does with a batch; one consumer acks every message."""
    queue_name = f"bench-limits-{secrets.token_hex(4)}"
    body = b'{"id":"00000000-0000-0000-0000-000000000000","type":"Bench","payload":{}}' * 4
    connection = await aio_pika.connect(url)
    version = _server_version(connection)
    try:
        admin = await connection.channel()
        await admin.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        consumed = 0
        last_consumed_at = 0.0
        consumer_channel = await connection.channel()
        await consumer_channel.set_qos(prefetch_count=64)
        consumer_queue = await consumer_channel.get_queue(queue_name, ensure=False)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal consumed, last_consumed_at
            await message.ack()
            consumed += 1
            last_consumed_at = time.monotonic()

        tag = await consumer_queue.consume(on_message)
        published = 0
        stop_at = time.monotonic() + seconds

        async def publisher() -> None:
            nonlocal published
            channel = await connection.channel(publisher_confirms=True)
            exchange = channel.default_exchange
            while time.monotonic() < stop_at:
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                            routing_key=queue_name,
                        )
                        for _ in range(in_flight)
                    )
                )
                published += in_flight
            await channel.close()

        started = time.monotonic()
        await asyncio.gather(*(publisher() for _ in range(publishers)))
        publish_seconds = time.monotonic() - started
        # Let the consumer finish what is queued; bounded, so a stuck broker cannot hang us.
        drain_deadline = time.monotonic() + max(10.0, seconds)
        while consumed < published and time.monotonic() < drain_deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        end_to_end = (last_consumed_at or time.monotonic()) - started
        await consumer_queue.cancel(tag)
        await admin.queue_delete(queue_name)
        return {
            "publish_per_s": round(published / publish_seconds, 1),
            "publish_consume_per_s": round(consumed / end_to_end, 1) if end_to_end > 0 else None,
            "published": published,
            "consumed": consumed,
            "publishers": publishers,
            "in_flight_per_publisher": in_flight,
            "seconds": round(seconds, 1),
            "server_version": version,
        }
    finally:
        with contextlib.suppress(Exception):
            channel = await connection.channel()
            await channel.queue_delete(queue_name)
        await connection.close()


def _server_version(connection: aio_pika.abc.AbstractConnection) -> str:
    # aiormq keeps the broker's connection.start properties; the version is bytes there.
    props: Any = getattr(getattr(connection, "transport", None), "connection", None)
    server = getattr(props, "server_properties", None) or {}
    value = server.get("version", "unknown")
    return value.decode() if isinstance(value, bytes) else str(value)
