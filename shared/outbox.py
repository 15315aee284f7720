"""Transactional outbox: a message is a row written in the same transaction as the state change.

The relay (shared/relay.py) publishes rows after commit; a crash between publishing and marking
a row only causes a re-publish, which the receiver's inbox absorbs.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, Text, insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import BigIntPk
from shared.messages.envelope import Contract, Envelope


def outbox_table(metadata: MetaData) -> Table:
    table = Table(
        "outbox",
        metadata,
        Column("seq", BigIntPk, primary_key=True, autoincrement=True),
        Column("message_id", String(36), nullable=False, unique=True),
        Column("message_type", String(100), nullable=False),
        Column("correlation_id", String(64), nullable=False),
        Column("body", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True),
    )
    Index(
        "ix_outbox_unpublished",
        table.c.seq,
        postgresql_where=table.c.published_at.is_(None),
        sqlite_where=table.c.published_at.is_(None),
    )
    return table


class Outbox:
    def __init__(self, table: Table) -> None:
        self.table = table

    async def add(self, session: AsyncSession, envelope: Envelope) -> None:
        await session.execute(
            insert(self.table).values(
                message_id=envelope.id,
                message_type=envelope.type,
                correlation_id=envelope.correlation_id,
                body=envelope.model_dump_json(),
                created_at=datetime.now(UTC),
            )
        )

    async def emit(
        self,
        session: AsyncSession,
        message: Contract,
        *,
        correlation_id: str,
        causation_id: str | None = None,
    ) -> Envelope:
        envelope = Envelope.wrap(message, correlation_id=correlation_id, causation_id=causation_id)
        await self.add(session, envelope)
        return envelope
