"""The cart service built for real on a temp SQLite file with the in-process bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from cart_rig import CartRig, MakeCart, cart_settings, stop

from services.cart.bootstrap import build
from shared.memory_bus import MemoryBus


@pytest_asyncio.fixture(loop_scope="session")
async def make_cart(tmp_path: Path) -> AsyncIterator[MakeCart]:
    """Factory: `await make_cart(session_ttl_seconds=1)` starts a cart service with these
    settings on its own SQLite file; all are stopped after the test."""
    running: list[tuple[CartRig, MemoryBus]] = []

    async def make(**overrides: Any) -> CartRig:
        bus = MemoryBus()
        db_file = tmp_path / f"cart-{len(running)}.db"
        runtime = build(cart_settings(db_file, **overrides), bus=bus, auto_migrate=True)
        await runtime.start()
        transport = httpx.ASGITransport(app=runtime.app(manage_lifecycle=False))
        rig = CartRig(runtime, httpx.AsyncClient(transport=transport, base_url="http://cart"))
        running.append((rig, bus))
        return rig

    try:
        yield make
    finally:
        for rig, bus in reversed(running):
            await rig.http.aclose()
            await stop(rig.runtime, bus)


@pytest_asyncio.fixture(loop_scope="session")
async def cart(make_cart: MakeCart) -> CartRig:
    return await make_cart()
