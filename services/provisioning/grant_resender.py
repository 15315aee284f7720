"""Sends credit grants again until payments confirms them.

A credit pack's GrantCredits is emitted once, through the outbox; if it never reaches payments
(dead-lettered after the bus's retry horizon while payments' database was down, a queue purged
by an operator) the shopper paid for credits nobody would ever grant. Every grant is recorded
unconfirmed with it (`credit_grants`), confirmed by payments' CreditsGranted, and sent again here
while unconfirmed, the wait doubling with each send. Safe to send any number of times: payments
applies a grant once per grant_id and answers every copy. Runs on every replica; on PostgreSQL
each takes rows no other holds (SKIP LOCKED)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from services.provisioning import repository
from services.provisioning.deps import ProvisioningRuntime
from shared.messages.contracts import GrantCredits
from shared.periodic import every

log = logging.getLogger("services.provisioning.grant_resender")


async def resend_due_grants(
    runtime: ProvisioningRuntime, *, now: datetime | None = None, batch: int = 100
) -> int:
    """Sends every unconfirmed grant due at `now` again, `batch` per transaction, until none is
    left; returns how many were sent."""
    now = now or datetime.now(UTC)
    resent = 0
    while True:
        sent = await _resend_batch(runtime, now=now, batch=batch)
        resent += sent
        # Each sent grant is due again after `now`: the loop ends when a batch comes back short.
        if sent < batch:
            return resent


async def _resend_batch(runtime: ProvisioningRuntime, *, now: datetime, batch: int) -> int:
    timing = runtime.deps.grant_resend
    async with runtime.transaction() as db:
        due = await repository.locked_due_grants(db, now=now, limit=batch)
        for grant in due:
            log.warning(
                "credit grant %s unconfirmed after %d sends: sending it again",
                grant.grant_id,
                grant.sends,
            )
            message = GrantCredits(
                grant_id=grant.grant_id,
                user_id=grant.user_id,
                credits=grant.credits,
                reason=grant.reason,
                order_id=grant.order_id,
            )
            # The order's id is its checkout's trace id, the first send's correlation id too.
            await runtime.emit(db, message, correlation_id=grant.order_id)
        await repository.grants_sent(
            db,
            [
                (g.grant_id, g.sends + 1, timing.next_send_at(sends=g.sends + 1, sent_at=now))
                for g in due
            ],
            now=now,
        )
    return len(due)


async def _resend_round(runtime: ProvisioningRuntime) -> None:
    await resend_due_grants(runtime)


def _poll_seconds(runtime: ProvisioningRuntime) -> float:
    return runtime.settings.grant_resend_poll_seconds


# The first round waits one poll: a grant is due no sooner than grant_resend_after_seconds
# after it was sent, and tests that run rounds themselves then have the rows to themselves.
grant_resender = every(_poll_seconds, _resend_round, name="credit grant resend", wait_first=True)
