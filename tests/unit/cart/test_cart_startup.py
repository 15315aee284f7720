"""Startup: the catalogue is seeded once, and a cart line without its item stops the service."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from cart_rig import cart_settings, stop

from services.cart import repository as repo
from services.cart.bootstrap import OrphanCartLines, build
from shared.memory_bus import MemoryBus
from shared.runtime import ServiceRuntime


async def started(db_file: Path, **settings: Any) -> tuple[ServiceRuntime, MemoryBus]:
    bus = MemoryBus()
    runtime = build(cart_settings(db_file, **settings), bus=bus, auto_migrate=True)
    await runtime.start()
    return runtime, bus


async def stopped(runtime: ServiceRuntime, bus: MemoryBus) -> None:
    await stop(runtime, bus)


async def catalogue_of(runtime: ServiceRuntime) -> dict[str, bool]:
    transport = httpx.ASGITransport(app=runtime.app(manage_lifecycle=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://cart") as http:
        items = (await http.get("/catalogue")).json()["items"]
    return {item["id"]: item["active"] for item in items}


async def test_the_catalogue_is_seeded_only_when_empty(tmp_path: Path) -> None:
    db = tmp_path / "cart.db"
    runtime, bus = await started(db)
    assert await catalogue_of(runtime) == dict.fromkeys(
        ["credits-100", "pkg-10", "setup-job", "vps-small"], True
    )
    async with runtime.transaction() as session:
        await repo.deactivate_item(session, "pkg-10")
    await stopped(runtime, bus)

    runtime, bus = await started(db)  # a restart must not undo the operator's change
    try:
        assert "pkg-10" not in await catalogue_of(runtime)
    finally:
        await stopped(runtime, bus)


async def test_seeding_can_be_switched_off(tmp_path: Path) -> None:
    runtime, bus = await started(tmp_path / "cart.db", seed_catalogue=False)
    try:
        assert await catalogue_of(runtime) == {}
    finally:
        await stopped(runtime, bus)


async def test_a_cart_line_without_its_catalogue_item_refuses_the_start(tmp_path: Path) -> None:
    db = tmp_path / "cart.db"
    runtime, bus = await started(db)
    await stopped(runtime, bus)
    # What an old SQLite file written with foreign keys off can contain.
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute(
            "INSERT INTO carts (id, user_id, status, currency, version, created_at, updated_at) "
            "VALUES ('c1', 'alice', 'open', 'EUR', 1, '2026-01-01', '2026-01-01')"
        )
        conn.execute(
            "INSERT INTO cart_lines (cart_id, item_id, quantity) VALUES ('c1', 'pkg-gone', 1)"
        )
    conn.close()

    bus = MemoryBus()
    runtime = build(cart_settings(db), bus=bus, auto_migrate=True)
    with pytest.raises(OrphanCartLines, match=r"missing catalogue items \['pkg-gone'\]"):
        await runtime.start()
    await stopped(runtime, bus)


async def test_the_database_itself_refuses_a_line_without_its_item(tmp_path: Path) -> None:
    runtime, bus = await started(tmp_path / "cart.db")
    await stopped(runtime, bus)

    with sqlite3.connect(tmp_path / "cart.db") as conn:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(
            "INSERT INTO carts (id, user_id, status, currency, version, created_at, updated_at) "
            "VALUES ('c1', 'alice', 'open', 'EUR', 1, '2026-01-01', '2026-01-01')"
        )
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            conn.execute(
                "INSERT INTO cart_lines (cart_id, item_id, quantity) VALUES ('c1', 'pkg-gone', 1)"
            )
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute(
                "INSERT INTO cart_lines (cart_id, item_id, quantity) VALUES ('c1', 'pkg-10', 100)"
            )
    conn.close()
