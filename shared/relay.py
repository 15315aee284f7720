"""Publishes outbox rows.

Two ways in. Envelopes written by this process are handed over by the outbox right after their
transaction commits (`handover`): published at once, without reading them back, and marked
published in batches once the broker has confirmed them. Rows nobody handed over (a crashed
process's, a failed publish's) are found by polling the table: at start, on `wake()`, and every
`idle_poll_seconds` for rows older than `handover_grace_seconds` (younger ones are probably in
the hands of the replica that wrote them; if not, they are taken on a later poll).

A row is marked published only after the broker confirmed it, so a crash in between only
causes a re-publish, which the receiver's inbox absorbs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.bus import Bus
from shared.db import is_postgres, one_of
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
        handover_grace_seconds: float = 5.0,
        mark_linger_seconds: float = 0.02,
    ) -> None:
        self.sessionmaker = sessionmaker
        engine = sessionmaker.kw["bind"]
        assert isinstance(engine, AsyncEngine), "the relay's sessionmaker is bound to an engine"
        self._engine: AsyncEngine = engine
        self._postgres = is_postgres(engine)
        self.table = table
        self.bus = bus
        self.batch_size = batch_size
        self.idle_poll_seconds = idle_poll_seconds
        self.handover_grace = timedelta(seconds=handover_grace_seconds)
        # Confirmed ids wait this long for company, so one UPDATE marks several hops.
        self.mark_linger_seconds = mark_linger_seconds
        self._wake = asyncio.Event()
        self._sweep_all = True  # the first poll takes every row, whatever its age
        self._handed: list[Envelope] = []
        self._in_hand: set[str] = set()  # handed over, not yet marked: the poll leaves them
        self._to_mark: list[str] = []
        self._mark_due = asyncio.Event()
        self.published = 0

    def wake(self) -> None:
        """Poll the table now, for rows of any age."""
        self._sweep_all = True
        self._wake.set()

    def handover(self, envelopes: list[Envelope]) -> None:
        """Envelopes whose outbox rows just committed; called by the outbox."""
        self._handed.extend(envelopes)
        self._in_hand.update(e.id for e in envelopes)
        self._wake.set()

    async def run(self) -> None:
        marker = asyncio.create_task(self._mark_loop())
        try:
            await self._publish_loop()
        finally:
            marker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await marker
            await self._final_mark()

    async def _publish_loop(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        next_poll = loop.time()  # the first poll at once
        while True:
            self._wake.clear()
            try:
                if self._handed:
                    # No poll after a handover: that would be a transaction per hop again.
                    await self._publish_handed()
                    failures = 0
                    continue
                if self._sweep_all or loop.time() >= next_poll:
                    sweep_all, self._sweep_all = self._sweep_all, False
                    grace = None if sweep_all else self.handover_grace
                    sent = await self.drain_once(min_age=grace)
                    failures = 0
                    next_poll = loop.time() + self.idle_poll_seconds
                    if sent == self.batch_size:
                        self._sweep_all = sweep_all
                        continue  # more waiting; don't sleep
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                self._sweep_all = True
                log.warning("outbox relay batch failed", exc_info=True)
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                continue
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as
            # the event fires, and the service's stop() would then wait forever.
            try:
                async with asyncio.timeout(max(0.0, next_poll - loop.time())):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _publish_handed(self) -> None:
        batch = self._handed[: self.batch_size]
        del self._handed[: self.batch_size]
        # Confirms are pipelined by the broker: publish the batch concurrently, await them all.
        results = await asyncio.gather(
            *(self.bus.publish(e) for e in batch), return_exceptions=True
        )
        failed = [e for e, r in zip(batch, results, strict=True) if isinstance(r, BaseException)]
        self._to_mark.extend(e.id for e, r in zip(batch, results, strict=True) if r is None)
        self._mark_due.set()
        if failed:
            # Back to the table: the next poll (of any age) publishes them.
            self._in_hand.difference_update(e.id for e in failed)
            first = next(r for r in results if isinstance(r, BaseException))
            raise RuntimeError(f"{len(failed)} of {len(batch)} publishes failed") from first

    async def _mark_loop(self) -> None:
        failures = 0
        while True:
            await self._mark_due.wait()
            await asyncio.sleep(self.mark_linger_seconds)
            self._mark_due.clear()
            ids, self._to_mark = self._to_mark, []
            try:
                await self._mark(ids)
                failures = 0
            except Exception:
                failures += 1
                log.warning("marking outbox rows published failed", exc_info=True)
                self._to_mark[:0] = ids
                self._mark_due.set()
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))

    async def _mark(self, ids: list[str]) -> None:
        if not ids:
            return
        t = self.table
        engine = self._engine
        stmt = (
            update(t)
            .where(one_of(t.c.message_id, ids, postgres=self._postgres), t.c.published_at.is_(None))
            .values(published_at=datetime.now(UTC))
        )
        if self._postgres:
            # One statement on its own needs no BEGIN and COMMIT round trips around it.
            async with engine.connect() as conn:
                auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await auto.execute(stmt)
        else:
            async with engine.begin() as conn:
                await conn.execute(stmt)
        self._in_hand.difference_update(ids)
        self.published += len(ids)

    async def _final_mark(self) -> None:
        """On stop, mark what the broker confirmed (best effort: unmarked rows are re-sent)."""
        ids, self._to_mark = self._to_mark, []
        if not ids:
            return
        try:
            async with asyncio.timeout(2.0):
                await self._mark(ids)
        except Exception:
            log.warning("could not mark %d confirmed outbox rows on stop", len(ids))

    async def drain_once(self, *, min_age: timedelta | None = None) -> int:
        """Publish one batch of unpublished rows (older than `min_age`) in order; returns how
        many rows it published."""
        t = self.table
        async with self.sessionmaker() as session, session.begin():
            query = (
                select(t.c.seq, t.c.message_id, t.c.body)
                .where(t.c.published_at.is_(None))
                .order_by(t.c.seq)
                .limit(self.batch_size)
            )
            if min_age is not None:
                query = query.where(t.c.created_at < datetime.now(UTC) - min_age)
            if is_postgres(session):
                # Replicas share the outbox; each row is claimed by one relay at a time.
                query = query.with_for_update(skip_locked=True)
            found = (await session.execute(query)).all()
            rows = [row for row in found if row.message_id not in self._in_hand]
            if not rows:
                return 0
            await asyncio.gather(
                *(self.bus.publish(Envelope.model_validate_json(body)) for _, _, body in rows)
            )
            seqs = [seq for seq, _, _ in rows]
            await session.execute(
                update(t)
                .where(one_of(t.c.seq, seqs, postgres=self._postgres))
                .values(published_at=datetime.now(UTC))
            )
        self.published += len(rows)
        return len(rows)
