"""The benchmark's order watcher on real PostgreSQL: a status row whose transaction took its
sequence number first but committed last is still seen (sequence order is not commit order)."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from bench.observe import OrderWatcher, connect
from tests.support.rig import ServiceRig


@pytest.fixture
def orders_url(orders_pg: ServiceRig) -> str:
    return orders_pg.runtime.settings.database_url


async def _order(conn: asyncpg.Connection, order_id: str) -> None:
    now = datetime.now(UTC)
    await conn.execute(
        "INSERT INTO orders (id, user_id, cart_id, status, currency, money_total, credits_total,"
        " created_at, updated_at) VALUES ($1, 'u', 'c', 'pending', 'EUR', 0, 0, $2, $2)",
        order_id,
        now,
    )


async def _status(conn: asyncpg.Connection, order_id: str, status: str) -> None:
    await conn.execute(
        "INSERT INTO order_status_history (order_id, status, reason, trace_id, at)"
        " VALUES ($1, $2, '', '', $3)",
        order_id,
        status,
        datetime.now(UTC),
    )


async def test_a_row_committed_after_a_later_sequence_number_was_read_is_still_seen(
    orders_url: str,
) -> None:
    first, second = await connect(orders_url), await connect(orders_url)
    watcher = OrderWatcher(orders_url)
    try:
        for conn, order_id in ((first, "late-1"), (second, "early-2")):
            await _order(conn, order_id)
        await watcher.open()  # polled by hand below
        slow = first.transaction()
        await slow.start()
        await _status(first, "late-1", "completed")  # takes the lower seq, commits last
        await _status(second, "early-2", "completed")  # autocommits at once
        await watcher.poll()
        assert set(watcher.terminal) == {"early-2"}
        await slow.commit()
        await watcher.poll()
        await watcher.poll()  # nothing is read twice
        assert set(watcher.terminal) == {"early-2", "late-1"}
        assert watcher.history["late-1"] == {"completed": watcher.terminal["late-1"][1]}
    finally:
        await watcher.stop()
        await first.close()
        await second.close()
