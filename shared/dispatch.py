"""Maps each message type to its one handler and runs it in a unit of work with the inbox.

Deliveries are applied by group commit (`shared/group_commit.py`): those that arrive while
`max_concurrent` units of work are already running are applied together, in one transaction
with one multi-row inbox claim. A failed group is applied again message by message, so a failure
retries or dead-letters only the message that caused it (handlers are idempotent by design:
every message may be delivered more than once anyway). Types named `alone` (handlers that call
out: Stripe, a server panel) are never grouped, so a slow or retried call holds no other
message's transaction or locks.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.group_commit import GroupCommit
from shared.inbox import claim, claim_many
from shared.logging import log_fields, trace_id_var
from shared.messages import Contract, Envelope, UnknownMessage, payload_of
from shared.outbox import Outbox

log = logging.getLogger("shared.dispatch")


@dataclass
class MessageContext:
    """What a handler gets besides its message: the open transaction (`db`, never named
    `session`: checkout and payment sessions are domain words here) and a way to send."""

    db: AsyncSession
    envelope: Envelope
    outbox: Outbox

    @property
    def trace_id(self) -> str:
        return self.envelope.correlation_id

    async def emit(self, message: Contract) -> None:
        await self.outbox.emit(
            self.db,
            message,
            correlation_id=self.envelope.correlation_id,
            causation_id=self.envelope.id,
        )


Handler = Callable[[MessageContext, Any], Awaitable[None]]


def handler_name_of(handler: Handler) -> str:
    """The inbox key: stable across restarts, also for handlers bound with functools.partial."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    return str(getattr(handler, "__name__", type(handler).__name__))


@dataclass
class _Job:
    envelope: Envelope
    message: Contract
    handler: Handler
    handler_name: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.envelope.id, self.handler_name)

    @property
    def claim(self) -> dict[str, str]:
        """The job's inbox row; `shared/inbox.py` adds the time it was processed."""
        return {
            "message_id": self.envelope.id,
            "handler": self.handler_name,
            "message_type": self.envelope.type,
            "correlation_id": self.envelope.correlation_id,
        }


class Dispatcher:
    def __init__(
        self,
        *,
        service: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        inbox: Table,
        handlers: Mapping[type[Contract], Handler],
        on_commit: Callable[[], None] = lambda: None,
        max_batch: int = 16,
        max_concurrent: int = 4,
        alone: Collection[type[Contract]] = (),
    ) -> None:
        self.service = service
        self.sessionmaker = sessionmaker
        self.outbox = outbox
        self.inbox = inbox
        self.handlers = dict(handlers)
        self.on_commit = on_commit
        self.max_batch = max_batch
        self.max_concurrent = max_concurrent
        self.alone = frozenset(alone)
        self._units: GroupCommit[_Job, None] = GroupCommit(
            apply_together=self._apply_together,
            apply_alone=self._apply_alone,
            max_batch=max_batch,
            max_concurrent=max_concurrent,
            groupable=self._groupable,
            name=f"{service} dispatcher",
        )

    @property
    def groups(self) -> int:
        """Units of work that applied more than one message."""
        return self._units.groups

    async def __call__(self, envelope: Envelope) -> None:
        message = payload_of(envelope)
        handler = self.handlers.get(type(message))
        if handler is None:
            raise UnknownMessage(f"{self.service} has no handler for {envelope.type}")
        job = _Job(envelope, message, handler, f"{self.service}.{handler_name_of(handler)}")
        await self._units.submit(job)

    def _groupable(self, job: _Job) -> bool:
        return type(job.message) not in self.alone

    async def _apply_alone(self, job: _Job) -> None:
        token = trace_id_var.set(job.envelope.correlation_id)
        try:
            async with self.sessionmaker() as db, db.begin():
                first_time = await claim(db, self.inbox, **job.claim)
                if first_time:
                    await job.handler(MessageContext(db, job.envelope, self.outbox), job.message)
                else:
                    _log_duplicate(job.envelope)
            if first_time:
                self.on_commit()
        finally:
            trace_id_var.reset(token)

    async def _apply_together(self, jobs: list[_Job]) -> list[None]:
        if len(jobs) == 1:  # a lone message: the prebuilt single-row claim
            await self._apply_alone(jobs[0])
            return [None]
        claims = {job.key: job.claim for job in jobs}  # a message twice in one group: one claim
        # In checkout order: the rows most handlers lock (a saga, a job, a checkout) are keyed by
        # it, so concurrent groups take those locks in one order and cannot deadlock on them.
        # The sort is stable: two messages of one checkout keep their order.
        ordered = sorted(jobs, key=lambda job: job.envelope.correlation_id)
        async with self.sessionmaker() as db, db.begin():
            fresh = await claim_many(db, self.inbox, [claims[k] for k in sorted(claims)])
            for job in ordered:
                if job.key not in fresh:
                    _log_duplicate(job.envelope)
                    continue
                fresh.discard(job.key)  # a second copy in the same group is a duplicate too
                token = trace_id_var.set(job.envelope.correlation_id)
                try:
                    await job.handler(MessageContext(db, job.envelope, self.outbox), job.message)
                finally:
                    trace_id_var.reset(token)
        self.on_commit()
        return [None] * len(jobs)


def _log_duplicate(envelope: Envelope) -> None:
    log.info("duplicate %s ignored", envelope.type, extra=log_fields(message_id=envelope.id))
