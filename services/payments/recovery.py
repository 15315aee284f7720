"""Catching up with Stripe when a webhook came too early or never came.

`replay_events` applies stored events that could not be applied when they arrived (their session
or refund row was not committed yet). `reconcile` asks Stripe about sessions still waiting for an
outcome and applies what the lost webhook would have. Both run periodically on every replica and
on demand from the operator API; both move sessions through stripe_events.settle_session, whose
conditional UPDATE lets exactly one path (webhook, replay, reconciler, any replica) emit.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

from services.payments import repository, stripe_events
from services.payments.domain import reconciled_target
from services.payments.settings import PaymentsSettings
from services.payments.stripe_gateway import StripeCallFailed, StripeGateway
from shared.logging import log_fields
from shared.runtime import BackgroundTask, ServiceRuntime

log = logging.getLogger("services.payments.recovery")


@dataclass
class Replayed:
    applied: list[str] = field(default_factory=list)
    unprocessed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Reconciled:
    order_id: str
    session_id: str
    status_before: str
    status: str


@dataclass
class Reconciliation:
    checked: int = 0
    changed: list[Reconciled] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _settings(runtime: ServiceRuntime) -> PaymentsSettings:
    return cast(PaymentsSettings, runtime.settings)


async def replay_events(runtime: ServiceRuntime, event_ids: Sequence[str] = ()) -> Replayed:
    """Applies the named events (processed or not), or else every unprocessed one that is
    recent enough. Each event in its own transaction: one that fails does not hold up the rest."""
    result = Replayed()
    if not event_ids:
        max_age = timedelta(seconds=_settings(runtime).stripe_event_retry_max_age_seconds)
        async with runtime.sessionmaker() as session:
            waiting = await repository.unprocessed_events(
                session, received_after=datetime.now(UTC) - max_age
            )
        event_ids = [event.event_id for event in waiting]
        only_unprocessed = True
    else:
        only_unprocessed = False
    for event_id in event_ids:
        async with runtime.transaction() as session:
            stored = await repository.locked_event(session, event_id)
            if stored is None:
                result.missing.append(event_id)
                continue
            if only_unprocessed and stored.processed_at is not None:
                continue  # another replica got there first
            if await stripe_events.apply_event(session, runtime.outbox, json.loads(stored.payload)):
                await repository.mark_event_processed(session, event_id)
                result.applied.append(event_id)
            else:
                result.unprocessed.append(event_id)
    return result


async def reconcile(
    runtime: ServiceRuntime, gateway: StripeGateway, *, min_age: timedelta | None = None
) -> Reconciliation:
    """Asks Stripe about our sessions still open or processing and applies their outcome."""
    settings = _settings(runtime)
    if min_age is None:
        min_age = timedelta(seconds=settings.reconcile_min_age_seconds)
    async with runtime.sessionmaker() as session:
        waiting = await repository.sessions_to_reconcile(
            session,
            created_before=datetime.now(UTC) - min_age,
            limit=settings.reconcile_batch_size,
        )
    result = Reconciliation(checked=len(waiting))
    for ours in waiting:
        # No transaction is held while Stripe answers.
        try:
            remote = await gateway.retrieve_checkout_session(
                order_id=ours.order_id, session_id=ours.session_id
            )
        except StripeCallFailed as exc:
            log.warning(
                "reconciler could not read a session from stripe: %s",
                exc.reason,
                extra=log_fields(session_id=ours.session_id),
            )
            result.errors.append(ours.session_id)
            continue
        target = reconciled_target(
            remote.status, remote.payment_status, remote.payment_intent_status
        )
        async with runtime.transaction() as session:
            await repository.mark_reconciled(session, ours.session_id)
            if target is None or target == ours.status:
                continue
            change = await stripe_events.settle_session(
                session,
                runtime.outbox,
                session_id=ours.session_id,
                target=target,
                payment_intent_id=remote.payment_intent_id,
                amount=remote.amount_total,
                currency=remote.currency,
                failure_reason="delayed payment failed (found by the reconciler)",
            )
        if change is not None:
            result.changed.append(Reconciled(ours.order_id, ours.session_id, ours.status, target))
    if result.changed:
        log.info("reconciler applied %d outcomes stripe had not reported", len(result.changed))
    return result


def retry_stored_events() -> BackgroundTask:
    async def retry_stripe_events(runtime: ServiceRuntime) -> None:
        await _every(
            _settings(runtime).stripe_event_retry_seconds,
            lambda: replay_events(runtime),
            "stripe event replay",
        )

    return retry_stripe_events


def reconcile_periodically(gateway: StripeGateway) -> BackgroundTask:
    async def reconcile_sessions(runtime: ServiceRuntime) -> None:
        await _every(
            _settings(runtime).reconcile_interval_seconds,
            lambda: reconcile(runtime, gateway),
            "stripe reconciliation",
        )

    return reconcile_sessions


async def _every(seconds: float, run: Callable[[], Awaitable[object]], what: str) -> None:
    """Runs `run()` every `seconds` until cancelled; a failed round is logged, not fatal."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s round failed; next round in %.1f s", what, seconds)
