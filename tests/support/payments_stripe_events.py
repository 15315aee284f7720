"""Stripe events payments did not cause, written by hand or made at the simulator: sessions of
other integrations (Payment Links, `stripe trigger`), disputes, refunds made in the Dashboard;
and what payments keeps of them (the stored event, the dispute rows, the operator's list)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from services.payments.models import Dispute, StripeEvent
from tests.support.payments import post_webhook
from tests.support.rig import ServiceRig, as_user
from tests.support.stripe_sim import signed, stripe_event


def foreign_session(*, payment_intent: str | None = None) -> dict[str, Any]:
    """A paid Checkout Session of a Payment Link: no order of ours in it (no `order_id` in its
    metadata, no `client_reference_id`)."""
    return {
        "id": f"cs_test_{uuid.uuid4().hex}",
        "object": "checkout.session",
        "status": "complete",
        "payment_status": "paid",
        "amount_total": 1500,
        "currency": "usd",
        "payment_intent": payment_intent or f"pi_{uuid.uuid4().hex}",
        "payment_link": "plink_1",
        "client_reference_id": None,
        "metadata": {},
    }


def dispute(
    payment_intent: str,
    *,
    dispute_id: str = "dp_test_1",
    status: str = "needs_response",
    amount: int = 2999,
    reason: str = "fraudulent",
    created: int = 1_700_000_000,
) -> dict[str, Any]:
    """The dispute object of a `charge.dispute.*` event (the fields payments reads)."""
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "currency": "eur",
        "charge": "ch_test_1",
        "payment_intent": payment_intent,
        "reason": reason,
        "status": status,
        "created": created,
        "metadata": {},
    }


async def post_event(
    payments: ServiceRig, event_type: str, obj: dict[str, Any], *, created: int | None = None
) -> str:
    """Posts a correctly signed event about `obj` (made at `created`, Unix seconds, if given);
    its id."""
    event = json.loads(stripe_event(event_type, obj))
    if created is not None:
        event["created"] = created
    body = json.dumps(event).encode()
    status, answer = await post_webhook(payments, body, signed(body))
    assert status == 200, answer
    return str(event["id"])


async def stored_event(payments: ServiceRig, event_id: str) -> StripeEvent:
    async with payments.runtime.sessionmaker() as db:
        row = await db.get(StripeEvent, event_id)
    assert row is not None, f"event {event_id} not stored"
    return row


async def stored_dispute(payments: ServiceRig, dispute_id: str) -> Dispute:
    async with payments.runtime.sessionmaker() as db:
        row = await db.get(Dispute, dispute_id)
    assert row is not None, f"no dispute {dispute_id}"
    return row


async def operator_disputes(payments: ServiceRig, **params: Any) -> httpx.Response:
    """The operator's `GET /operator/disputes` (`status`, `order_id`, `limit`)."""
    return await payments.http.get(
        "/operator/disputes", params=params, headers=as_user("ops", operator=True)
    )
