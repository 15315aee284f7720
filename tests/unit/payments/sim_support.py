"""The bundled Stripe simulator on a real HTTP port for payments tests, with a recorder standing
where our webhook URL would be (tests forward what it received, so each test decides when and
how often an event reaches the service)."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import stripe
from payments_support import client, payments_settings
from sqlalchemy import select

from services.payments.models import PaymentSession
from services.payments.settings import PaymentsSettings
from shared.messages import Envelope
from shared.messages.contracts import CreatePaymentSession, PaymentLine
from shared.runtime import ServiceRuntime

SIM_KEY = "sk_test_payments_sim"
SIM_WEBHOOK_SECRET = "whsec_payments_sim_test"


@dataclass
class WebhookRecorder:
    """Stands where our webhook URL would be: keeps the exact bytes and signature Stripe sent."""

    received: list[tuple[bytes, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: dict[str, Any], receive: Any, send_: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with self.lock:
            self.received.append((body, headers.get("stripe-signature", "")))
        await send_({"type": "http.response.start", "status": 200, "headers": []})
        await send_({"type": "http.response.body", "body": b"{}"})

    def for_object(self, event_type: str, object_id: str) -> list[tuple[bytes, str]]:
        with self.lock:
            received = list(self.received)
        return [
            (body, signature)
            for body, signature in received
            if (event := json.loads(body))["type"] == event_type
            and event["data"]["object"]["id"] == object_id
        ]


@dataclass
class Sim:
    url: str
    hooks: WebhookRecorder

    async def control(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POSTs to the simulator's /_sim/ controls; the JSON answer."""
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(f"{self.url}/_sim/{path}", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())


def settings_on_sim(tmp_path: Path, sim: Sim, **overrides: Any) -> PaymentsSettings:
    """Payments' test settings pointed at this simulator, with its key and webhook secret."""
    return payments_settings(
        tmp_path,
        stripe_api_base=sim.url,
        stripe_api_key=SIM_KEY,
        stripe_webhook_secret=SIM_WEBHOOK_SECRET,
        **overrides,
    )


def create_command(
    order_id: str, *, expires_in: timedelta = timedelta(hours=2)
) -> CreatePaymentSession:
    return CreatePaymentSession(
        order_id=order_id,
        user_id="shopper-1",
        currency="EUR",
        amount_total=2 * 1250 + 499,
        lines=(
            PaymentLine(name="Server plan S", quantity=2, unit_amount=1250),
            PaymentLine(name="Setup job", quantity=1, unit_amount=499),
        ),
        expires_at=datetime.now(UTC) + expires_in,
    )


async def stored_session(runtime: ServiceRuntime, order_id: str) -> PaymentSession:
    async with runtime.sessionmaker() as session:
        row = (
            await session.execute(select(PaymentSession).where(PaymentSession.order_id == order_id))
        ).scalar_one()
    return row


async def retrieve(sim: Sim, session_id: str) -> stripe.checkout.Session:
    """The session as Stripe holds it, read with a client of the test's own."""
    http = stripe.HTTPXClient()
    sdk = stripe.StripeClient(SIM_KEY, base_addresses={"api": sim.url}, http_client=http)
    try:
        return await sdk.v1.checkout.sessions.retrieve_async(session_id)
    finally:
        await http.close_async()


async def webhooks_of(sim: Sim, event_type: str, object_id: str) -> list[tuple[bytes, str]]:
    for _ in range(200):
        if found := sim.hooks.for_object(event_type, object_id):
            return found
        await asyncio.sleep(0.025)
    raise AssertionError(f"the simulator never sent {event_type} for {object_id}")


async def forward(runtime: ServiceRuntime, deliveries: list[tuple[bytes, str]]) -> None:
    """Hands what the simulator sent to our webhook endpoint, bytes and signature unchanged."""
    async with client(runtime) as http:
        for body, signature in deliveries:
            hook = await http.post(
                "/webhooks/stripe", content=body, headers={"Stripe-Signature": signature}
            )
            assert hook.status_code == 200, hook.text


async def send_create(runtime: ServiceRuntime, order_id: str) -> str:
    """Opens the order's Checkout Session at the simulator; its session id."""
    await runtime.dispatcher(Envelope.wrap(create_command(order_id), correlation_id=order_id))
    return (await stored_session(runtime, order_id)).session_id


async def paid_order(runtime: ServiceRuntime, sim: Sim) -> tuple[str, str, str]:
    """An order paid by card at the simulator, its webhook delivered: (order, session, intent)."""
    order = str(uuid.uuid4())
    session_id = await send_create(runtime, order)
    paid = await sim.control(f"sessions/{session_id}/pay")
    await forward(runtime, await webhooks_of(sim, "checkout.session.completed", session_id))
    intent = paid["data"]["object"]["payment_intent"]
    assert (await stored_session(runtime, order)).status == "complete"
    return order, session_id, str(intent)


def sent_events(sim: Sim, event_type: str) -> list[dict[str, Any]]:
    """Every distinct event of this type the simulator delivered, oldest first."""
    with sim.hooks.lock:
        received = list(sim.hooks.received)
    seen: dict[str, dict[str, Any]] = {}
    for body, _ in received:
        event = json.loads(body)
        if event["type"] == event_type:
            seen.setdefault(event["id"], event)
    return list(seen.values())
