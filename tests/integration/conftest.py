"""Fixtures shared by the PostgreSQL integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest_asyncio

from devstack.stack import Stack
from services.orders.bootstrap import build
from tests.support.orders import orders_settings
from tests.support.rig import Rigs, ServiceRig
from tests.support.stack import stripe_sim_client


@pytest_asyncio.fixture(loop_scope="session")
async def orders_pg(
    fresh_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[ServiceRig]:
    """The orders service on a fresh PostgreSQL database (migrated), on the in-process bus."""
    settings = orders_settings(await fresh_database("orders"))
    async with Rigs() as rigs:
        yield await rigs.start(ServiceRig, build, settings)


@pytest_asyncio.fixture(loop_scope="session")
async def sim(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The Stripe simulator of the test module's `stack`, its faults cleared after the test."""
    async with stripe_sim_client(stack) as client:
        yield client
