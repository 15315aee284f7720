"""Helpers for the payments tests: settings, message delivery, outbox reads, signed webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from services.payments.models import outbox
from services.payments.settings import PaymentsSettings
from shared.auth import issue_token
from shared.messages import Contract, Envelope
from shared.runtime import ServiceRuntime

JWT_SECRET = "payments-test-jwt-secret-0123456789abcdef"
WEBHOOK_SECRET = "whsec_payments_unit_test"


def payments_settings(tmp_path: Path, **overrides: Any) -> PaymentsSettings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/payments.db",
        "broker_url": "memory://",
        "jwt_secret": JWT_SECRET,
        "stripe_api_key": "sk_test_payments_unit",
        "stripe_webhook_secret": WEBHOOK_SECRET,
        # Nothing listens here: a test that reaches Stripe by accident fails fast.
        "stripe_api_base": "http://127.0.0.1:9",
        "stripe_max_attempts": 2,
        "stripe_retry_base_seconds": 0.01,
        "log_json": False,
    }
    values.update(overrides)
    return PaymentsSettings(**values)


def client(runtime: ServiceRuntime) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=runtime.app(manage_lifecycle=False))
    return httpx.AsyncClient(transport=transport, base_url="http://payments")


def bearer(user_id: str, *, operator: bool = False) -> dict[str, str]:
    roles = ("operator",) if operator else ()
    return {"Authorization": f"Bearer {issue_token(JWT_SECRET, user_id, roles=roles)}"}


async def send(runtime: ServiceRuntime, message: Contract, *, trace_id: str) -> Envelope:
    """Delivers one message to the service's dispatcher, as the bus would."""
    envelope = Envelope.wrap(message, correlation_id=trace_id)
    await runtime.dispatcher(envelope)
    return envelope


async def redeliver(runtime: ServiceRuntime, envelope: Envelope) -> None:
    await runtime.dispatcher(envelope)


async def emitted(runtime: ServiceRuntime, message_type: str | None = None) -> list[Envelope]:
    """Everything the service wrote to its outbox, oldest first."""
    stmt = select(outbox.c.body).order_by(outbox.c.seq)
    if message_type is not None:
        stmt = stmt.where(outbox.c.message_type == message_type)
    async with runtime.sessionmaker() as session:
        bodies = (await session.execute(stmt)).scalars().all()
    return [Envelope.model_validate_json(body) for body in bodies]


def new_order_id() -> str:
    return str(uuid.uuid4())


def signed(body: bytes, secret: str = WEBHOOK_SECRET, *, at: int | None = None) -> str:
    """A Stripe-Signature header made the way Stripe makes it."""
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def stripe_event(event_type: str, obj: dict[str, Any], *, event_id: str | None = None) -> bytes:
    event = {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "type": event_type,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": obj},
    }
    return json.dumps(event).encode()
