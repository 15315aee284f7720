"""The cart service built for real on a temp SQLite file with the in-process bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from services.cart.bootstrap import build
from tests.support.cart import CartRig, MakeCart, cart_settings
from tests.support.rig import Rigs, sqlite_url


@pytest_asyncio.fixture(loop_scope="session")
async def make_cart(tmp_path: Path) -> AsyncIterator[MakeCart]:
    """Factory: `await make_cart(session_ttl_seconds=1)` starts a cart service with these
    settings on its own SQLite file; all are stopped after the test."""
    async with Rigs() as rigs:

        async def make(**overrides: Any) -> CartRig:
            database_url = sqlite_url(tmp_path / f"cart-{len(rigs)}.db")
            return await rigs.start(CartRig, build, cart_settings(database_url, **overrides))

        yield make


@pytest_asyncio.fixture(loop_scope="session")
async def cart(make_cart: MakeCart) -> CartRig:
    return await make_cart()
