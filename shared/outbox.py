"""Transactional outbox: a message is a row written in the same transaction as the state change.

The relay (shared/relay.py) publishes rows after commit; a crash between publishing and marking
a row only causes a re-publish, which the receiver's inbox absorbs. An outbox built with
`on_committed` also hands the envelopes a session wrote to that callback once the session's
transaction has committed, so the relay publishes them without reading them back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, Text, event, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shared.db import BigIntPk
from shared.messages.envelope import Contract, Envelope

# session.info key: the envelopes this session's open transaction wrote, and their outbox.
_PENDING = "shared.outbox.pending"

Committed = Callable[[list[Envelope]], None]


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
    def __init__(self, table: Table, *, on_committed: Committed | None = None) -> None:
        self.table = table
        self.on_committed = on_committed
        # Built once: every message sent runs it (see shared/inbox.py).
        self._insert = insert(table)

    async def add(self, session: AsyncSession, envelope: Envelope) -> None:
        await session.execute(
            self._insert,
            {
                "message_id": envelope.id,
                "message_type": envelope.type,
                "correlation_id": envelope.correlation_id,
                "body": envelope.model_dump_json(),
                "created_at": datetime.now(UTC),
            },
        )
        if self.on_committed is not None:
            outbox, envelopes = session.info.setdefault(_PENDING, (self, []))
            if outbox is self:
                envelopes.append(envelope)

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


@event.listens_for(Session, "after_commit")
def _hand_over_committed(session: Session) -> None:
    pending: tuple[Outbox, list[Envelope]] | None = session.info.pop(_PENDING, None)
    if pending is not None and pending[0].on_committed is not None:
        pending[0].on_committed(pending[1])


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, _previous: Any) -> None:
    # Also on a savepoint's rollback: its rows are gone, and which of the pending envelopes
    # were its own is not known here. The rows that did commit are then left to the relay's
    # poll: published later, never lost.
    session.info.pop(_PENDING, None)
