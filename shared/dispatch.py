"""Maps each message type to its one handler and runs it in a unit of work with the inbox."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.inbox import claim
from shared.logging import log_fields
from shared.messages import Contract, Envelope, UnknownMessage, payload_of
from shared.outbox import Outbox

log = logging.getLogger("shared.dispatch")


@dataclass
class MessageContext:
    """What a handler gets besides its message: the open transaction and a way to send."""

    session: AsyncSession
    envelope: Envelope
    outbox: Outbox

    @property
    def trace_id(self) -> str:
        return self.envelope.correlation_id

    async def emit(self, message: Contract) -> None:
        await self.outbox.emit(
            self.session,
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
    ) -> None:
        self.service = service
        self.sessionmaker = sessionmaker
        self.outbox = outbox
        self.inbox = inbox
        self.handlers = dict(handlers)
        self.on_commit = on_commit

    async def __call__(self, envelope: Envelope) -> None:
        message = payload_of(envelope)
        handler = self.handlers.get(type(message))
        if handler is None:
            raise UnknownMessage(f"{self.service} has no handler for {envelope.type}")
        handler_name = f"{self.service}.{handler_name_of(handler)}"
        async with self.sessionmaker() as session, session.begin():
            first_time = await claim(
                session,
                self.inbox,
                message_id=envelope.id,
                handler=handler_name,
                message_type=envelope.type,
                correlation_id=envelope.correlation_id,
            )
            if not first_time:
                log.info(
                    "duplicate %s ignored", envelope.type, extra=log_fields(message_id=envelope.id)
                )
                return
            await handler(MessageContext(session, envelope, self.outbox), message)
        self.on_commit()
