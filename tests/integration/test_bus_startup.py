"""A service that starts while the broker is still down waits for it (bounded) instead of
exiting: the chaos run's broker restart showed services crash-looping at startup."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aio_pika.exceptions
import pytest

from devstack.stack import delete_broker_namespace, free_port
from shared.bus import RabbitBus


@contextlib.asynccontextmanager
async def forwarder(port: int, target_host: str, target_port: int) -> AsyncIterator[None]:
    """A TCP relay on `port` to the real broker: the broker 'comes up' when this starts."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        yield


def _via(rabbitmq_url: str, port: int) -> tuple[str, str, int]:
    parts = urlsplit(rabbitmq_url)
    host, real_port = parts.hostname or "127.0.0.1", parts.port or 5672
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{port}"
    return parts._replace(netloc=netloc).geturl(), host, real_port


async def test_a_bus_started_before_the_broker_connects_once_the_broker_is_up(
    rabbitmq_url: str,
) -> None:
    port = free_port()
    url, host, real_port = _via(rabbitmq_url, port)
    bus = RabbitBus(url, namespace=f"cs-startup-{port}", connect_within=30)
    starting = asyncio.create_task(bus.start())
    await asyncio.sleep(1.5)
    assert not starting.done(), "start() gave up (or connected) while nothing listened"
    try:
        async with forwarder(port, host, real_port):
            await asyncio.wait_for(starting, timeout=20)
            await bus.close()
    finally:
        await delete_broker_namespace(rabbitmq_url, bus.names)


async def test_a_broker_that_never_comes_up_fails_the_start_after_the_bound(
    rabbitmq_url: str,
) -> None:
    url, _, _ = _via(rabbitmq_url, free_port())
    bus = RabbitBus(url, namespace="cs-startup-never", connect_within=1.5)
    started = time.monotonic()
    with pytest.raises((aio_pika.exceptions.AMQPConnectionError, OSError)):
        await bus.start()
    assert 1.0 <= time.monotonic() - started < 10
