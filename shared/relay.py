"""Publishes outbox rows. Woken right after each local commit for low latency; also polls slowly
to pick up rows left behind by a crashed peer or written by another replica."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus import Bus
from shared.db import is_postgres
from shared.messages import Envelope

log = logging.getLogger("shared.relay")


class OutboxRelay:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        table: Table,
        bus: Bus,
        *,
        batch_size: int = 200,
        idle_poll_seconds: float = 1.0,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.table = table
        self.bus = bus
        self.batch_size = batch_size
        self.idle_poll_seconds = idle_poll_seconds
        self._wake = asyncio.Event()
        self.published = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                sent = await self.drain_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.warning("outbox relay batch failed", exc_info=True)
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                continue
            if sent == self.batch_size:
                continue  # more waiting; don't sleep
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as
            # the event fires, and the service's stop() would then wait forever.
            try:
                async with asyncio.timeout(self.idle_poll_seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def drain_once(self) -> int:
        """Publish one batch in order; returns how many rows it published."""
        t = self.table
        async with self.sessionmaker() as session, session.begin():
            query = (
                select(t.c.seq, t.c.body)
                .where(t.c.published_at.is_(None))
                .order_by(t.c.seq)
                .limit(self.batch_size)
            )
            if is_postgres(session):
                # Replicas share the outbox; each row is claimed by one relay at a time.
                query = query.with_for_update(skip_locked=True)
            rows = (await session.execute(query)).all()
            if not rows:
                return 0
            # Confirms are pipelined by the broker: publish the batch concurrently, then mark it.
            await asyncio.gather(
                *(self.bus.publish(Envelope.model_validate_json(body)) for _, body in rows)
            )
            await session.execute(
                update(t)
                .where(t.c.seq.in_([seq for seq, _ in rows]))
                .values(published_at=datetime.now(UTC))
            )
        self.published += len(rows)
        return len(rows)
