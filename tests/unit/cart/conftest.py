"""The cart service built for real on a temp SQLite file with the in-process bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest_asyncio
from cart_rig import CartRig, cart_settings, stop

from services.cart.bootstrap import build
from shared.memory_bus import MemoryBus


@pytest_asyncio.fixture(loop_scope="session")
async def cart(tmp_path: Path) -> AsyncIterator[CartRig]:
    bus = MemoryBus()
    runtime = build(cart_settings(tmp_path / "cart.db"), bus=bus, auto_migrate=True)
    await runtime.start()
    transport = httpx.ASGITransport(app=runtime.app(manage_lifecycle=False))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://cart") as http:
            yield CartRig(runtime, http)
    finally:
        await stop(runtime, bus)
