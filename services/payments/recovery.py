"""Catching up with Stripe when a webhook came too early or never came.

`replay_events` applies stored events that could not be applied when they arrived (their session
or refund row was not committed yet); events about no payment of ours were marked ignored when
they arrived and are never among them. `reconcile` asks Stripe about sessions still waiting for an
outcome, `reconcile_refunds` about refunds still pending, and each applies what the lost webhook
would have. All run periodically on every replica and on demand from the operator API; they move
sessions and refunds through stripe_events.settle_session / settle_refund, whose conditional
UPDATE lets exactly one path (webhook, replay, reconciler, any replica) emit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from services.payments import repository, stripe_events
from services.payments.deps import PaymentsRuntime
from services.payments.domain import reconciled_target, refund_status
from services.payments.stripe_gateway import StripeCallFailed, StripeGateway
from shared.logging import log_fields
from shared.periodic import every

log = logging.getLogger("services.payments.recovery")

T = TypeVar("T")
ChangeT = TypeVar("ChangeT")


@dataclass
class Replayed:
    applied: list[str] = field(default_factory=list)
    unprocessed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    # About no payment of ours: marked ignored (stored before foreign events were recognised
    # at intake, or named by the operator), never replayed again.
    ignored: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Reconciled:
    order_id: str
    session_id: str
    status_before: str
    status: str


@dataclass(frozen=True)
class RefundReconciled:
    order_id: str
    refund_key: str
    stripe_refund_id: str
    status: str


@dataclass
class Reconciliation(Generic[ChangeT]):
    """One round: how many were asked about, what changed, and the ids (session or Stripe
    refund) Stripe could not be asked about, to be asked again next round."""

    checked: int = 0
    changed: list[ChangeT] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def stripe_view(self, ask: Awaitable[T], *, what: str, object_id: str) -> T | None:
        """Stripe's answer to `ask`; None (logged, counted as an error) when Stripe refused or
        could not be reached: the round goes on with the next one."""
        try:
            return await ask
        except StripeCallFailed as exc:
            log.warning(
                "reconciler could not read a %s from stripe: %s",
                what,
                exc.reason,
                extra=log_fields(**{f"{what}_id": object_id}),
            )
            self.errors.append(object_id)
            return None


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
            outcome = await stripe_events.apply_stored(db, runtime.outbox, stored)
            if outcome.ignored is not None:
                result.ignored.append(event_id)
            elif outcome.applied:
                result.applied.append(event_id)
            else:
                result.unprocessed.append(event_id)
    return result


async def reconcile(
    runtime: PaymentsRuntime, gateway: StripeGateway, *, min_age: timedelta | None = None
) -> Reconciliation[Reconciled]:
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
    result: Reconciliation[Reconciled] = Reconciliation(checked=len(waiting))
    for ours in waiting:
        # No transaction is held while Stripe answers.
        remote = await result.stripe_view(
            gateway.retrieve_checkout_session(order_id=ours.order_id, session_id=ours.session_id),
            what="session",
            object_id=ours.session_id,
        )
        if remote is None:
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


async def reconcile_refunds(
    runtime: PaymentsRuntime, gateway: StripeGateway, *, min_age: timedelta | None = None
) -> Reconciliation[RefundReconciled]:
    """Asks Stripe about refunds still pending `min_age` (refund_reconcile_after_seconds) after
    they were made or last asked about, and settles them as their lost webhook would have: a
    failed or canceled one announces RefundFailed, a succeeded one nothing more."""
    settings = runtime.settings
    if min_age is None:
        min_age = timedelta(seconds=settings.refund_reconcile_after_seconds)
    async with runtime.transaction() as db:
        taken = await repository.take_refunds_to_reconcile(
            db, asked_before=datetime.now(UTC) - min_age, limit=settings.reconcile_batch_size
        )
    result: Reconciliation[RefundReconciled] = Reconciliation(checked=len(taken))
    for ours in taken:
        # Each in its own transaction, none held while Stripe answers.
        remote = await result.stripe_view(
            gateway.retrieve_refund(order_id=ours.order_id, refund_id=ours.stripe_refund_id),
            what="refund",
            object_id=ours.stripe_refund_id,
        )
        if remote is None:
            async with runtime.transaction() as db:
                await repository.put_back_refund(db, ours)
            continue
        target = refund_status(remote.status)
        async with runtime.transaction() as db:
            change = await stripe_events.settle_refund(
                db,
                runtime.outbox,
                stripe_refund_id=ours.stripe_refund_id,
                target=target,
                stripe_reason=remote.failure_reason,
            )
        if change is not None:
            result.changed.append(
                RefundReconciled(ours.order_id, ours.refund_key, ours.stripe_refund_id, target)
            )
    if result.changed:
        log.info("reconciler settled %d refunds stripe had not reported", len(result.changed))
    return result


async def _reconcile_round(runtime: PaymentsRuntime) -> None:
    await reconcile(runtime, runtime.deps.stripe)


async def _reconcile_refunds_round(runtime: PaymentsRuntime) -> None:
    await reconcile_refunds(runtime, runtime.deps.stripe)


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
reconcile_refunds_periodically = every(
    _reconcile_seconds,
    _reconcile_refunds_round,
    name="stripe refund reconciliation",
    wait_first=True,
)
