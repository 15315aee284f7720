"""Every service's migrations on PostgreSQL: concurrent `migrate` runs are safe, and a service
whose schema is behind refuses to start with a clear message and a non-zero exit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable

import pytest

from devstack.stack import SERVICES
from shared.db import make_engine
from shared.migrations import SchemaNotAtHead, ensure_at_head, upgrade_to_head

FreshDatabase = Callable[[str], Awaitable[str]]


@pytest.mark.parametrize("service", SERVICES)
async def test_three_replicas_migrating_at_once_all_succeed(
    service: str, fresh_database: FreshDatabase
) -> None:
    url = await fresh_database(f"migrate_{service}")
    module = __import__(f"services.{service}.bootstrap", fromlist=["MIGRATIONS"])
    engines = [make_engine(url) for _ in range(3)]
    try:
        # Without serialisation the three DDL transactions fail or deadlock; don't hang on that.
        async with asyncio.timeout(60):
            await asyncio.gather(*(upgrade_to_head(e, module.MIGRATIONS) for e in engines))
        await ensure_at_head(engines[0], module.MIGRATIONS)
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_service_whose_schema_is_behind_refuses_to_start(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database("not_migrated_orders")
    from services.orders.bootstrap import MIGRATIONS

    engine = make_engine(url)
    try:
        with pytest.raises(SchemaNotAtHead, match="run the service's `migrate` command"):
            await ensure_at_head(engine, MIGRATIONS)
    finally:
        await engine.dispose()

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.orders"],
        env={**os.environ, "ORDERS_DATABASE_URL": url, "ORDERS_HTTP_PORT": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "orders refuses to start" in result.stderr
    assert "run the service's `migrate` command first" in result.stderr
