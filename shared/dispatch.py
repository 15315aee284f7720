"""Maps each message type to its one handler and runs it in a unit of work with the inbox.

Group commit: deliveries that arrive while `max_concurrent` units of work are already running
wait and are then applied together, in one transaction with one multi-row inbox claim and one
commit, instead of one each. An idle service still applies a lone message at once. If any
message of a group fails, the group is rolled back and each of its messages is applied again on
its own, so a failure retries or dead-letters only the message that caused it (handlers are
idempotent by design: every message may be delivered more than once anyway). Types named
`alone` (handlers that call out: Stripe, a server panel) are never grouped, so a slow or retried
call holds no other message's transaction or locks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

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
        self._waiting: list[_Job] = []
        self._running: set[asyncio.Task[None]] = set()
        self.groups = 0  # units of work that applied more than one message

    async def __call__(self, envelope: Envelope) -> None:
        message = payload_of(envelope)
        handler = self.handlers.get(type(message))
        if handler is None:
            raise UnknownMessage(f"{self.service} has no handler for {envelope.type}")
        job = _Job(envelope, message, handler, f"{self.service}.{handler_name_of(handler)}")
        self._waiting.append(job)
        self._start_units()
        await job.done

    def _start_units(self) -> None:
        while self._waiting and len(self._running) < self.max_concurrent:
            jobs = [self._waiting.pop(0)]
            if type(jobs[0].message) not in self.alone:
                rest: list[_Job] = []
                for job in self._waiting:
                    groupable = type(job.message) not in self.alone
                    (jobs if groupable and len(jobs) < self.max_batch else rest).append(job)
                self._waiting = rest
            task = asyncio.create_task(self._unit(jobs))
            self._running.add(task)
            task.add_done_callback(self._unit_done)

    def _unit_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start_units()

    async def _unit(self, jobs: list[_Job]) -> None:
        try:
            if len(jobs) > 1:
                try:
                    await self._apply_together(jobs)
                except Exception:
                    log.info(
                        "a group of %d messages failed; applying each on its own",
                        len(jobs),
                        exc_info=True,
                    )
                else:
                    self.groups += 1
                    for job in jobs:
                        _settle(job.done)
                    return
            for job in jobs:
                await self._apply_alone(job)
        finally:
            for job in jobs:  # cancelled on stop: nobody waits in vain
                if not job.done.done():
                    job.done.cancel()

    async def _apply_alone(self, job: _Job) -> None:
        token = trace_id_var.set(job.envelope.correlation_id)
        try:
            async with self.sessionmaker() as session, session.begin():
                first_time = await claim(session, self.inbox, **job.claim)
                if first_time:
                    await job.handler(
                        MessageContext(session, job.envelope, self.outbox), job.message
                    )
                else:
                    _log_duplicate(job.envelope)
            if first_time:
                self.on_commit()
        except Exception as exc:
            _settle(job.done, exc)
        else:
            _settle(job.done)
        finally:
            trace_id_var.reset(token)

    async def _apply_together(self, jobs: list[_Job]) -> None:
        claims = {job.key: job.claim for job in jobs}  # a message twice in one group: one claim
        # In checkout order: the rows most handlers lock (a saga, a job, a checkout) are keyed by
        # it, so concurrent groups take those locks in one order and cannot deadlock on them.
        # The sort is stable: two messages of one checkout keep their order.
        ordered = sorted(jobs, key=lambda job: job.envelope.correlation_id)
        async with self.sessionmaker() as session, session.begin():
            fresh = await claim_many(session, self.inbox, [claims[k] for k in sorted(claims)])
            for job in ordered:
                if job.key not in fresh:
                    _log_duplicate(job.envelope)
                    continue
                fresh.discard(job.key)  # a second copy in the same group is a duplicate too
                token = trace_id_var.set(job.envelope.correlation_id)
                try:
                    await job.handler(
                        MessageContext(session, job.envelope, self.outbox), job.message
                    )
                finally:
                    trace_id_var.reset(token)
        self.on_commit()


def _settle(done: asyncio.Future[None], exc: BaseException | None = None) -> None:
    # The waiting delivery may have been cancelled (its channel closed) and its future with it;
    # the message is then redelivered, and the inbox knows whether it was applied.
    if done.done():
        return
    if exc is None:
        done.set_result(None)
    else:
        done.set_exception(exc)


def _log_duplicate(envelope: Envelope) -> None:
    log.info("duplicate %s ignored", envelope.type, extra=log_fields(message_id=envelope.id))
