"""Fixtures shared by the PostgreSQL integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest_asyncio
from pydantic import SecretStr

from services.orders.bootstrap import build
from services.orders.settings import OrdersSettings
from shared.memory_bus import MemoryBus
from shared.runtime import ServiceRuntime


@pytest_asyncio.fixture(loop_scope="session")
async def orders_runtime(
    fresh_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[ServiceRuntime]:
    """The orders service on a fresh PostgreSQL database (migrated), on the in-process bus."""
    settings = OrdersSettings(
        database_url=await fresh_database("orders"),
        broker_url="memory://",
        jwt_secret=SecretStr("orders-pg-test-secret-long-enough-0123"),
    )
    bus = MemoryBus()
    service = build(settings, bus=bus, auto_migrate=True)
    await service.start()
    yield service
    await service.stop()
    await bus.close()
