"""Fixtures shared by the end-to-end tests (the whole topology as separate processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from devstack.stack import Stack
from shared.bus import RabbitBus
from tests.support.stack import stripe_sim_client


@pytest_asyncio.fixture(loop_scope="session")
async def sim(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The Stripe simulator of the test module's `stack`, its faults cleared after the test."""
    async with stripe_sim_client(stack) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def bus(stack: Stack, rabbitmq_url: str) -> AsyncIterator[RabbitBus]:
    """A client of the stack's own broker namespace: sends as a service would, reads its DLQs."""
    client = RabbitBus(rabbitmq_url, namespace=stack.namespace)
    await client.start()
    try:
        yield client
    finally:
        await client.close()
