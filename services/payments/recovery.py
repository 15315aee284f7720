"""Catching up with Stripe when a webhook came too early or never came.

`replay_events` applies stored events that could not be applied when they arrived (their session
or refund row was not committed yet). `reconcile` asks Stripe about sessions still waiting for an
outcome and applies what the lost webhook would have. Both run periodically on every replica and
on demand from the operator API; both move sessions through stripe_events.settle_session, whose
conditional UPDATE lets exactly one path (webhook, replay, reconciler, any replica) emit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.payments import repository, stripe_events
from services.payments.deps import PaymentsRuntime
from services.payments.domain import reconciled_target
from services.payments.stripe_gateway import StripeCallFailed, StripeGateway
from shared.logging import log_fields
from shared.periodic import every

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


async def replay_events(runtime: PaymentsRuntime, event_ids: Sequence[str] = ()) -> Replayed:
    """Applies the named events (processed or not), or else every unprocessed one that is
    recent enough. Each event in its own transaction: one that fails does not hold up the rest."""
    result = Replayed()
    if not event_ids:
        max_age = timedelta(seconds=runtime.settings.stripe_event_retry_max_age_seconds)
        async with runtime.sessionmaker() as db:
            waiting = await repository.unprocessed_events(
                db, received_after=datetime.now(UTC) - max_age
            )
        event_ids = [event.event_id for event in waiting]
        only_unprocessed = True
    else:
        only_unprocessed = False
    for event_id in event_ids:
        async with runtime.transaction() as db:
            stored = await repository.locked_event(db, event_id)
            if stored is None:
                result.missing.append(event_id)
                continue
            if only_unprocessed and stored.processed_at is not None:
                continue  # another replica got there first
            if await stripe_events.apply_event(db, runtime.outbox, json.loads(stored.payload)):
                await repository.mark_event_processed(db, event_id)
                result.applied.append(event_id)
            else:
                result.unprocessed.append(event_id)
    return result


async def reconcile(
    runtime: PaymentsRuntime, gateway: StripeGateway, *, min_age: timedelta | None = None
) -> Reconciliation:
    """Asks Stripe about our sessions still open or processing and applies their outcome."""
    settings = runtime.settings
    if min_age is None:
        min_age = timedelta(seconds=settings.reconcile_min_age_seconds)
    async with runtime.sessionmaker() as db:
        waiting = await repository.sessions_to_reconcile(
            db,
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
        async with runtime.transaction() as db:
            await repository.mark_reconciled(db, ours.session_id)
            if target is None or target == ours.status:
                continue
            change = await stripe_events.settle_from_stripe(
                db, runtime.outbox, remote, target, found_by="the reconciler"
            )
        if change is not None:
            result.changed.append(Reconciled(ours.order_id, ours.session_id, ours.status, target))
    if result.changed:
        log.info("reconciler applied %d outcomes stripe had not reported", len(result.changed))
    return result


async def _reconcile_round(runtime: PaymentsRuntime) -> None:
    await reconcile(runtime, runtime.deps.stripe)


def _replay_seconds(runtime: PaymentsRuntime) -> float:
    return runtime.settings.stripe_event_retry_seconds


def _reconcile_seconds(runtime: PaymentsRuntime) -> float:
    return runtime.settings.reconcile_interval_seconds


retry_stored_events = every(
    _replay_seconds, replay_events, name="stripe event replay", wait_first=True
)
reconcile_periodically = every(
    _reconcile_seconds, _reconcile_round, name="stripe reconciliation", wait_first=True
)
