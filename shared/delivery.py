"""What a consumer does with one delivery, the same on RabbitMQ and on the in-process bus.

ack: applied (or already applied); retry: a transient failure, redelivered up to the delivery
limit; dead: can never be applied (malformed, unknown) and goes to the DLQ with the reason.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.logging import log_fields, trace_id_var
from shared.messages import Envelope, MalformedMessage, UnknownMessage, decode

log = logging.getLogger("shared.delivery")

MessageCallback = Callable[[Envelope], Awaitable[None]]


class PermanentError(Exception):
    """A message that can never be applied, however often it is delivered (a handler's domain
    says no). It goes to the DLQ at once with this error as the reason, instead of after the
    delivery limit with only `broker: delivery_limit` to show for it."""


class Outcome(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str = ""


async def deliver(body: bytes, callback: MessageCallback) -> Verdict:
    try:
        envelope = decode(body)
    except MalformedMessage as exc:
        log.warning("dead-lettering malformed message", extra=log_fields(reason=str(exc)))
        return Verdict(Outcome.DEAD, str(exc))
    token = trace_id_var.set(envelope.correlation_id)
    try:
        await callback(envelope)
    except (UnknownMessage, MalformedMessage, PermanentError) as exc:
        reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, PermanentError) else str(exc)
        log.warning(
            "dead-lettering %s",
            envelope.type,
            extra=log_fields(message_id=envelope.id, reason=reason),
        )
        return Verdict(Outcome.DEAD, reason)
    except Exception as exc:
        log.warning(
            "handler failed for %s, will retry",
            envelope.type,
            exc_info=True,
            extra=log_fields(message_id=envelope.id),
        )
        return Verdict(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
    finally:
        trace_id_var.reset(token)
    return Verdict(Outcome.ACK)


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    message_type: str | None
    reason: str
    body: bytes
