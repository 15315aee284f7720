"""Fixtures shared by the PostgreSQL integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest_asyncio

from services.orders.bootstrap import build
from tests.support.orders import orders_settings
from tests.support.rig import Rigs, ServiceRig


@pytest_asyncio.fixture(loop_scope="session")
async def orders_pg(
    fresh_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[ServiceRig]:
    """The orders service on a fresh PostgreSQL database (migrated), on the in-process bus."""
    settings = orders_settings(await fresh_database("orders"))
    async with Rigs() as rigs:
        yield await rigs.start(ServiceRig, build, settings)
