"""Stripe webhook endpoint: verify the signature, store the event once, apply its effect in the
same transaction. Stripe redelivers until it gets a 2xx, so a duplicate is answered 200 and ignored.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, cast

import stripe
from fastapi import APIRouter, Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import repository
from services.payments.settings import PaymentsSettings
from shared.errors import ApiError
from shared.logging import log_fields
from shared.messages.contracts import PaymentExpired, PaymentSucceeded
from shared.runtime import ServiceRuntime, runtime_of

log = logging.getLogger("services.payments.webhooks")

router = APIRouter(tags=["stripe"])
Runtime = Annotated[ServiceRuntime, Depends(runtime_of)]

PAID_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
EXPIRED_EVENT = "checkout.session.expired"


def verified_event(payload: bytes, signature: str | None, settings: PaymentsSettings) -> Any:
    try:
        stripe.Webhook.construct_event(
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
            session, event_id=event["id"], type_=event["type"], payload=payload.decode()
        )
        if is_new and await apply_event(session, runtime, event):
            await repository.mark_event_processed(session, event["id"])
    if not is_new:
        log.info("duplicate stripe event %s ignored", event["id"])
    return {"received": True}


async def apply_event(
    session: AsyncSession, runtime: ServiceRuntime, event: dict[str, Any]
) -> bool:
    """Applies one stored event; False when it cannot be applied yet (its session is unknown).

    Event types we do not act on count as applied: storing them is all there is to do.
    """
    kind = event["type"]
    obj: dict[str, Any] = event.get("data", {}).get("object", {})
    if kind in PAID_EVENTS:
        if obj.get("payment_status") != "paid":
            return True  # completed with a delayed method: async_payment_succeeded follows
        return await _settle_paid(session, runtime, obj)
    if kind == EXPIRED_EVENT:
        return await _settle_expired(session, runtime, obj)
    return True


async def _settle_paid(session: AsyncSession, runtime: ServiceRuntime, obj: dict[str, Any]) -> bool:
    payment_intent = obj.get("payment_intent")
    if isinstance(payment_intent, dict):
        payment_intent = payment_intent.get("id")
    change = await repository.close_payment_session(
        session, session_id=obj["id"], status="complete", payment_intent_id=payment_intent
    )
    if change is None:
        return await _known_but_settled(session, obj["id"])
    await runtime.emit(
        session,
        PaymentSucceeded(
            order_id=change.order_id,
            session_id=change.session_id,
            payment_intent_id=payment_intent,
            amount=int(obj.get("amount_total", change.amount_total)),
            currency=str(obj.get("currency") or change.currency).lower(),
        ),
        correlation_id=change.trace_id,
    )
    return True


async def _settle_expired(
    session: AsyncSession, runtime: ServiceRuntime, obj: dict[str, Any]
) -> bool:
    change = await repository.close_payment_session(session, session_id=obj["id"], status="expired")
    if change is None:
        return await _known_but_settled(session, obj["id"])
    await runtime.emit(
        session,
        PaymentExpired(order_id=change.order_id, session_id=change.session_id),
        correlation_id=change.trace_id,
    )
    return True


async def _known_but_settled(session: AsyncSession, session_id: str) -> bool:
    if await repository.session_exists(session, session_id):
        return True  # already complete/expired: a second outcome for one session changes nothing
    log.warning(
        "stripe event for unknown checkout session kept for replay",
        extra=log_fields(session_id=session_id),
    )
    return False
