"""Stripe webhook endpoint: verify the signature, store the event once, apply its effect in the
same transaction. Stripe redelivers until it gets a 2xx, so a duplicate is answered 200 and ignored.
An event that cannot be applied yet stays stored unprocessed; recovery.py applies it later.

Events arriving together share one transaction (group commit, `EventIntake`): one multi-row
insert-or-nothing, each new event applied in turn, one update marking them processed, one commit;
every request waits for its batch's commit before its 200. Per-event transactions cost a begin,
four statements and a commit each, and capped intake at about a hundred events per second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import stripe
from fastapi import APIRouter, Request
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.models import StripeEvent
from services.payments.settings import PaymentsSettings
from services.payments.stripe_events import apply_events, object_id_of
from shared.db import is_postgres, one_of, upsert_insert
from shared.errors import ApiError
from shared.runtime import ServiceRuntime, runtime_from

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


@dataclass
class Received:
    event: dict[str, Any]
    payload: str
    # True when this delivery stored the event, False for a duplicate; set after the commit.
    stored: asyncio.Future[bool] = field(default_factory=lambda: _loop().create_future())

    @property
    def event_id(self) -> str:
        return str(self.event["id"])


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


class EventIntake:
    """Stores (and applies) the events of concurrent requests in shared transactions.

    One batch is written at a time; what arrives meanwhile forms the next one. A request only
    learns its outcome from its batch's future, after the commit, so a 200 still means stored."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.waiting: list[Received] = []
        self.writer: asyncio.Task[None] | None = None

    async def store(self, event: dict[str, Any], payload: str) -> bool:
        received = Received(event, payload)
        self.waiting.append(received)
        if self.writer is None or self.writer.done():
            # Its own task: a client hanging up must not cancel a batch other requests share.
            self.writer = asyncio.create_task(self._write_all())
        return await received.stored

    async def _write_all(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
            try:
                new = await self._write(batch)
            except asyncio.CancelledError:
                # Shutting down: nothing is answered 200 that the commit did not confirm.
                for received in batch + self.waiting:
                    received.stored.cancel()
                raise
            except Exception as exc:
                for received in batch:
                    if not received.stored.done():
                        received.stored.set_exception(exc)
                continue
            seen: set[str] = set()
            for received in batch:
                # A redelivery in the same batch as its first delivery is a duplicate too.
                is_new = received.event_id in new and received.event_id not in seen
                seen.add(received.event_id)
                if not received.stored.done():
                    received.stored.set_result(is_new)

    async def _write(self, batch: list[Received]) -> set[str]:
        by_id: dict[str, Received] = {}
        for received in batch:
            by_id.setdefault(received.event_id, received)
        firsts = list(by_id.values())
        try:
            async with self.runtime.transaction() as session:
                new = await _insert_events(session, firsts)
                await _apply_all(session, self.runtime, [r for r in firsts if r.event_id in new])
            return new
        except Exception:
            if len(firsts) == 1:
                raise
            log.exception("applying a batch of %d stripe events failed; one by one", len(firsts))
        # One event's effect failed: store the batch on its own, then apply each event in its
        # own transaction, so one bad event holds up no other (what fails stays for replay).
        async with self.runtime.transaction() as session:
            new = await _insert_events(session, firsts)
        for received in firsts:
            if received.event_id in new:
                await _apply_alone(self.runtime, received)
        return new


async def _insert_events(session: AsyncSession, batch: list[Received]) -> set[str]:
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
        upsert_insert(session)(StripeEvent)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(StripeEvent.event_id)
    )
    return set((await session.execute(stmt)).scalars())


async def _apply_all(session: AsyncSession, runtime: ServiceRuntime, new: list[Received]) -> None:
    # By object (stable, so one session's events keep their order): row locks in one order.
    ordered = sorted(new, key=lambda r: object_id_of(r.event) or "")
    applied = await apply_events(session, runtime.outbox, [r.event for r in ordered])
    if applied:
        await session.execute(
            update(StripeEvent)
            .where(one_of(StripeEvent.event_id, list(applied), postgres=is_postgres(session)))
            .values(processed_at=datetime.now(UTC))
        )


async def _apply_alone(runtime: ServiceRuntime, received: Received) -> None:
    try:
        async with runtime.transaction() as session:
            await _apply_all(session, runtime, [received])
    except Exception:
        log.exception("stripe event %s stored but not applied; left for replay", received.event_id)


_intakes: weakref.WeakKeyDictionary[ServiceRuntime, EventIntake] = weakref.WeakKeyDictionary()


def intake_of(runtime: ServiceRuntime) -> EventIntake:
    intake = _intakes.get(runtime)
    if intake is None:
        intake = _intakes[runtime] = EventIntake(runtime)
    return intake


@router.post("/webhooks/stripe")
async def stripe_webhook(request: Request) -> dict[str, bool]:
    # The runtime and the header read directly, not as dependencies: dependency resolution
    # costs more than either read on this hot route.
    runtime = runtime_from(request)
    settings = cast(PaymentsSettings, runtime.settings)
    payload = await request.body()
    event = verified_event(payload, request.headers.get("Stripe-Signature"), settings)
    if event is None:
        raise ApiError(400, "invalid_signature", "the Stripe-Signature header does not verify")
    if not await intake_of(runtime).store(event, payload.decode()):
        log.info("duplicate stripe event %s ignored", event["id"])
    return {"received": True}
