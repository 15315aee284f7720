"""Startup: the catalogue is seeded once; a cart line without its item, or a schema behind the
code, stops the service with a clear line."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.cart import repository as repo
from services.cart.bootstrap import MIGRATIONS, OrphanCartLines, build
from shared.migrations import SchemaNotAtHead
from tests.support.cart import CartRig, cart_settings
from tests.support.migrations import migrated_to
from tests.support.rig import sqlite_url


async def started(db_file: Path, *, auto_migrate: bool = True, **overrides: Any) -> CartRig:
    settings = cart_settings(sqlite_url(db_file), **overrides)
    return await CartRig.start(build, settings, auto_migrate=auto_migrate)


async def catalogue_of(cart: CartRig) -> dict[str, bool]:
    items = (await cart.http.get("/catalogue")).json()["items"]
    return {item["id"]: item["active"] for item in items}


async def test_the_catalogue_is_seeded_only_when_empty(tmp_path: Path) -> None:
    db = tmp_path / "cart.db"
    cart = await started(db)
    assert await catalogue_of(cart) == dict.fromkeys(
        ["credits-100", "pkg-10", "setup-job", "vps-small"], True
    )
    async with cart.runtime.transaction() as session:
        await repo.deactivate_item(session, "pkg-10")
    await cart.stop()

    cart = await started(db)  # a restart must not undo the operator's change
    try:
        assert "pkg-10" not in await catalogue_of(cart)
    finally:
        await cart.stop()


async def test_seeding_can_be_switched_off(tmp_path: Path) -> None:
    cart = await started(tmp_path / "cart.db", seed_catalogue=False)
    try:
        assert await catalogue_of(cart) == {}
    finally:
        await cart.stop()


async def test_a_cart_line_without_its_catalogue_item_refuses_the_start(tmp_path: Path) -> None:
    db = tmp_path / "cart.db"
    await (await started(db)).stop()
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

    with pytest.raises(OrphanCartLines, match=r"missing catalogue items \['pkg-gone'\]"):
        await started(db)


async def test_the_database_itself_refuses_a_line_without_its_item(tmp_path: Path) -> None:
    await (await started(tmp_path / "cart.db")).stop()

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


# --- the schema revision that added checkout sessions, over a database already deployed ------

BEFORE_SESSIONS = "0aa48c8246e0"


def cart_cli(db_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cart", *args],
        env={
            **os.environ,
            "CART_DATABASE_URL": f"sqlite+aiosqlite:///{db_file}",
            "CART_BROKER_URL": "memory://",
            "CART_HTTP_PORT": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_schema_behind_the_code_refuses_the_start_with_a_clear_line(
    tmp_path: Path,
) -> None:
    db = tmp_path / "cart.db"
    await migrated_to(sqlite_url(db), MIGRATIONS, BEFORE_SESSIONS)

    with pytest.raises(SchemaNotAtHead, match=rf"at \['{BEFORE_SESSIONS}'\], code expects"):
        await started(db, auto_migrate=False)

    refused = await asyncio.to_thread(cart_cli, db)
    assert refused.returncode == 2, refused.stderr
    assert "cart refuses to start" in refused.stderr
    assert "run the service's `migrate` command first" in refused.stderr


async def test_the_sessions_revision_keeps_existing_carts_and_they_check_out(
    tmp_path: Path,
) -> None:
    db = tmp_path / "cart.db"
    await migrated_to(sqlite_url(db), MIGRATIONS, BEFORE_SESSIONS)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(
            "INSERT INTO catalogue_items (id, kind, name, unit_price, currency, credit_price,"
            " units_per_item, active, created_at, updated_at) VALUES ('pkg-10', 'session_package',"
            " '10 sessions', 5000, 'EUR', 400, 10, 1, '2026-01-01', '2026-01-01')"
        )
        conn.execute(
            "INSERT INTO carts (id, user_id, status, currency, version, created_at, updated_at) "
            "VALUES ('c-old', 'alice', 'open', 'EUR', 3, '2026-01-01', '2026-01-01')"
        )
        conn.execute(
            "INSERT INTO cart_lines (cart_id, item_id, quantity) VALUES ('c-old', 'pkg-10', 2)"
        )
    conn.close()

    migrated = await asyncio.to_thread(cart_cli, db, "migrate")
    assert migrated.returncode == 0, migrated.stderr

    cart = await started(db, auto_migrate=False)
    try:
        view = (await cart.http.get("/carts/c-old", headers=cart.as_user())).json()
        session = await cart.open_session("c-old")
        checkout = await cart.checkout(
            "c-old", "old-cart", body={"session_id": session.json()["session_id"]}
        )
    finally:
        await cart.stop()

    assert [(x["item_id"], x["quantity"], x["available"]) for x in view["lines"]] == [
        ("pkg-10", 2, True)
    ]
    assert session.status_code == 201
    assert checkout.status_code == 202, checkout.text
    assert checkout.json()["totals"]["credits_total"] == 800
