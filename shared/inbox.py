"""Inbox: the record that a handler has applied a message, written in the handler's transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import insert_or_nothing, is_postgres


def _claim_statement(table: Table, *, postgres: bool) -> Any:
    """Built once per table and dialect (kept in the table's `info`): building the statement
    and its cache key cost about as much CPU as running it, and every message handled runs it."""
    if "shared.inbox.claim" not in table.info:
        table.info["shared.inbox.claim"] = insert_or_nothing(table, "message_id", "handler")
    return table.info["shared.inbox.claim"][postgres]


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("message_id", String(36), primary_key=True),
        Column("handler", String(100), primary_key=True),
        Column("message_type", String(100), nullable=False),
        Column("correlation_id", String(64), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False),
    )


async def claim(
    session: AsyncSession,
    table: Table,
    *,
    message_id: str,
    handler: str,
    message_type: str,
    correlation_id: str,
) -> bool:
    """True when this handler has not applied the message before.

    ON CONFLICT DO NOTHING rather than read-then-insert: a concurrent duplicate waits on the first
    one's row lock and then sees the conflict, so two replicas can never both apply it.
    """
    stmt = _claim_statement(table, postgres=is_postgres(session))
    result = await session.execute(
        stmt,
        {
            "message_id": message_id,
            "handler": handler,
            "message_type": message_type,
            "correlation_id": correlation_id,
            "processed_at": datetime.now(UTC),
        },
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def claim_many(
    session: AsyncSession, table: Table, claims: list[dict[str, str]]
) -> set[tuple[str, str]]:
    """`claim` for several messages in one statement: the (message_id, handler) pairs that had
    not been applied before. Each dict holds message_id, handler, message_type and
    correlation_id; the pairs must be distinct."""
    if not claims:
        return set()
    now = datetime.now(UTC)
    stmt = (
        _claim_statement(table, postgres=is_postgres(session))
        .values([{**c, "processed_at": now} for c in claims])
        .returning(table.c.message_id, table.c.handler)
    )
    return {(row.message_id, row.handler) for row in await session.execute(stmt)}
