"""Stripe webhook endpoint: verify the signature, store the event once, apply its effect in the
same transaction. Stripe redelivers until it gets a 2xx, so a duplicate is answered 200 and ignored.
An event that cannot be applied yet stays stored unprocessed; recovery.py applies it later.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, cast

import stripe
from fastapi import APIRouter, Depends, Header, Request

from services.payments import repository
from services.payments.settings import PaymentsSettings
from services.payments.stripe_events import apply_event, object_id_of
from shared.errors import ApiError
from shared.runtime import ServiceRuntime, runtime_of

log = logging.getLogger("services.payments.webhooks")

router = APIRouter(tags=["stripe"])
Runtime = Annotated[ServiceRuntime, Depends(runtime_of)]


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


@router.post("/webhooks/stripe")
async def stripe_webhook(
    request: Request,
    runtime: Runtime,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> dict[str, bool]:
    settings = cast(PaymentsSettings, runtime.settings)
    payload = await request.body()
    event = verified_event(payload, stripe_signature, settings)
    if event is None:
        raise ApiError(400, "invalid_signature", "the Stripe-Signature header does not verify")
    async with runtime.transaction() as session:
        is_new = await repository.record_event(
            session,
            event_id=event["id"],
            type_=event["type"],
            object_id=object_id_of(event),
            payload=payload.decode(),
        )
        if is_new and await apply_event(session, runtime.outbox, event):
            await repository.mark_event_processed(session, event["id"])
    if not is_new:
        log.info("duplicate stripe event %s ignored", event["id"])
    return {"received": True}
