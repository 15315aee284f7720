"""Stripe webhook endpoint: verify the signature, store the event once, apply its effect in the
same transaction. Stripe redelivers until it gets a 2xx, so a duplicate is answered 200 and ignored.
An event that cannot be applied yet stays stored unprocessed; recovery.py applies it later.

Events arriving together share one transaction (group commit, `EventIntake` on
`shared/group_commit.py`): one multi-row insert-or-nothing, each new event applied in turn, one
update marking them processed, one commit; every request waits for its batch's commit before
its 200. Per-event transactions cost a begin, four statements and a commit each, and capped
intake at about a hundred events per second.
"""

from __future__ import annotations

import json
import logging
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from fastapi import APIRouter, Request
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.deps import PaymentsRuntime
from services.payments.models import StripeEvent
from services.payments.settings import PaymentsSettings
from services.payments.stripe_events import apply_events, object_id_of
from shared.db import is_postgres, one_of, upsert_insert
from shared.errors import ApiError
from shared.group_commit import GroupCommit
from shared.runtime import runtime_from

log = logging.getLogger("services.payments.webhooks")

router = APIRouter(tags=["stripe"])

# Large enough to absorb a burst in one commit, small enough to keep a batch's locks short.
MAX_BATCH = 128


def verified_event(payload: bytes, signature: str | None, settings: PaymentsSettings) -> Any:
    try:
        # Only the signature check: construct_event would also parse the payload into a
        # StripeObject tree we never use, before we parse it again as plain JSON.
        stripe.WebhookSignature.verify_header(
            payload,
            signature,
            settings.stripe_webhook_secret.get_secret_value(),
            tolerance=settings.stripe_webhook_tolerance_seconds,
        )
        event = json.loads(payload)
        return event if isinstance(event, dict) and event.get("id") and event.get("type") else None
    except (stripe.SignatureVerificationError, ValueError):
        return None


@dataclass(frozen=True)
class Received:
    event: dict[str, Any]
    payload: str

    @property
    def event_id(self) -> str:
        return str(self.event["id"])


class EventIntake:
    """Stores (and applies) the events of concurrent requests in shared transactions.

    One batch is written at a time; what arrives meanwhile forms the next one. A request only
    learns its outcome after its batch's commit, so a 200 still means stored."""

    def __init__(self, runtime: PaymentsRuntime) -> None:
        self.runtime = runtime
        self.batches: GroupCommit[Received, bool] = GroupCommit(
            apply_together=self._write,
            apply_alone=self._write_alone,
            max_batch=MAX_BATCH,
            # Requests that arrive in the same turn of the event loop form the first batch.
            linger=True,
            # The same event twice in one batch is one event: nothing to split when it fails.
            key=lambda received: received.event_id,
            name="stripe webhook intake",
        )

    async def store(self, event: dict[str, Any], payload: str) -> bool:
        """True when this delivery stored the event, False for a duplicate; after the commit."""
        return await self.batches.submit(Received(event, payload))

    async def _write(self, batch: list[Received]) -> list[bool]:
        """Stores the batch's events with one insert and applies the new ones, in one
        transaction; for each delivery, whether it stored its event."""
        by_id: dict[str, Received] = {}
        for received in batch:
            by_id.setdefault(received.event_id, received)
        firsts = list(by_id.values())
        async with self.runtime.transaction() as db:
            new = await _insert_events(db, firsts)
            await _apply_all(db, self.runtime, [r for r in firsts if r.event_id in new])
        seen: set[str] = set()
        stored: list[bool] = []
        for received in batch:
            # A redelivery in the same batch as its first delivery is a duplicate too.
            stored.append(received.event_id in new and received.event_id not in seen)
            seen.add(received.event_id)
        return stored

    async def _write_alone(self, received: Received) -> bool:
        """One event of a failed batch, in its own transaction: one bad event holds up no other,
        and what fails stays stored for replay."""
        try:
            [stored] = await self._write([received])
            return stored
        except Exception:
            log.exception("stripe event %s not applied; storing it for replay", received.event_id)
        async with self.runtime.transaction() as db:
            new = await _insert_events(db, [received])
        return received.event_id in new


async def _insert_events(db: AsyncSession, batch: list[Received]) -> set[str]:
    """The ids this insert stored; ON CONFLICT, not read-then-insert: a concurrent delivery of
    the same event (another replica) waits on the first one's row and then finds it. Sorted by
    id so two replicas' batches take the unique index's locks in one order."""
    now = datetime.now(UTC)
    rows = [
        {
            "event_id": r.event_id,
            "type": str(r.event["type"]),
            "object_id": object_id_of(r.event),
            "payload": r.payload,
            "received_at": now,
        }
        for r in sorted(batch, key=lambda r: r.event_id)
    ]
    stmt = (
        upsert_insert(db)(StripeEvent)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(StripeEvent.event_id)
    )
    return set((await db.execute(stmt)).scalars())


async def _apply_all(db: AsyncSession, runtime: PaymentsRuntime, new: list[Received]) -> None:
    # By object (stable, so one session's events keep their order): row locks in one order.
    ordered = sorted(new, key=lambda r: object_id_of(r.event) or "")
    applied = await apply_events(db, runtime.outbox, [r.event for r in ordered])
    if applied:
        await db.execute(
            update(StripeEvent)
            .where(one_of(StripeEvent.event_id, list(applied), postgres=is_postgres(db)))
            .values(processed_at=datetime.now(UTC))
        )


_intakes: weakref.WeakKeyDictionary[PaymentsRuntime, EventIntake] = weakref.WeakKeyDictionary()


def intake_of(runtime: PaymentsRuntime) -> EventIntake:
    intake = _intakes.get(runtime)
    if intake is None:
        intake = _intakes[runtime] = EventIntake(runtime)
    return intake


@router.post("/webhooks/stripe")
async def stripe_webhook(request: Request) -> dict[str, bool]:
    # The runtime and the header read directly, not as dependencies: dependency resolution
    # costs more than either read on this hot route.
    runtime: PaymentsRuntime = runtime_from(request)
    payload = await request.body()
    event = verified_event(payload, request.headers.get("Stripe-Signature"), runtime.settings)
    if event is None:
        raise ApiError(400, "invalid_signature", "the Stripe-Signature header does not verify")
    if not await intake_of(runtime).store(event, payload.decode()):
        log.info("duplicate stripe event %s ignored", event["id"])
    return {"received": True}
