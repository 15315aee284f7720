"""What a consumer does with one delivery, the same on RabbitMQ and on the in-process bus.

ack: applied (or already applied); retry: a transient failure, redelivered after a delay that
grows with each attempt (RetryPolicy) until the retry horizon, then dead-lettered; dead: can never
be applied (malformed, unknown, a PermanentError) and goes to the DLQ at once with the reason.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from shared.logging import log_fields, trace_id_var
from shared.messages import Envelope, MalformedMessage, UnknownMessage, decode

log = logging.getLogger("shared.delivery")

MessageCallback = Callable[[Envelope], Awaitable[None]]

# Carried by a message parked for a retry: how often it failed, and since when (epoch
# milliseconds, wall clock, because the next attempt may run in another process; an integer,
# because AMQP client libraries may encode a float header as 32 bits, which rounds an epoch to
# minutes).
ATTEMPTS_HEADER = "x-retry-attempts"
FIRST_FAILURE_HEADER = "x-first-failure-ms"
LAST_ERROR_HEADER = "x-last-error"
HORIZON_REASON = "retry_horizon"

# A PostgreSQL failover or a broker restart lasts seconds to a minute; a downstream outage can
# last hours. The delays grow to the cap (the last entry, then repeated) and give up only after
# the horizon, so no message is dead-lettered by an outage shorter than that.
DEFAULT_BACKOFF: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 600.0)
DEFAULT_HORIZON = 6 * 3600.0


class PermanentError(Exception):
    """A message that can never be applied, however often it is delivered (a handler's domain
    says no). It goes to the DLQ at once with this error as the reason, instead of being retried
    until the retry horizon."""


class Outcome(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class RetryPolicy:
    """When a transiently failing message is tried again: after backoff[attempt - 1] seconds
    (the last entry is the cap), until `horizon` seconds after its first failure."""

    backoff: tuple[float, ...] = field(default=DEFAULT_BACKOFF)
    horizon: float = DEFAULT_HORIZON

    def __post_init__(self) -> None:
        if not self.backoff or min(self.backoff) <= 0 or self.horizon <= 0:
            raise ValueError("retry backoff needs positive delays and a positive horizon")

    def plan(self, *, attempts: int, first_failure: float | None, now: float) -> RetryPlan:
        """The next step for a message that failed once more; `attempts` failures before it."""
        attempt = max(attempts, 0) + 1
        first = now if first_failure is None else first_failure
        if now - first >= self.horizon:
            return RetryPlan(attempt, first, None)
        return RetryPlan(attempt, first, self.backoff[min(attempt, len(self.backoff)) - 1])


@dataclass(frozen=True)
class RetryPlan:
    attempt: int
    first_failure: float
    # Seconds to wait before the next delivery; None: the horizon passed, dead-letter it.
    delay: float | None

    def headers(self, error: str) -> dict[str, int | float | str]:
        return {
            ATTEMPTS_HEADER: self.attempt,
            FIRST_FAILURE_HEADER: round(self.first_failure * 1000),
            LAST_ERROR_HEADER: error[:500],
        }


def horizon_reason(error: str) -> str:
    return f"{HORIZON_REASON}: {error}"


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
