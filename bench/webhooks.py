"""Webhook intake: signed `checkout.session.completed` events per second that the payments
endpoint verifies, stores (logging each) and deduplicates, with a share of redeliveries.

The events name sessions that are already complete (paid during the card runs), so each one
exercises the whole path — signature, insert-or-nothing into stripe_events, the conditional
session move that finds nothing to move — without starting new sagas that would compete with
the intake being measured."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import secrets
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx

from services.payments.stripe_sim.signing import signature_header
from shared.testing.stack import WEBHOOK_SECRET

EVENT_PREFIX = "evt_bench_"


def make_event(session_id: str, amount: int = 5000) -> bytes:
    """An event shaped like the simulator's, pretty-printed as Stripe sends it."""
    event: dict[str, Any] = {
        "id": f"{EVENT_PREFIX}{secrets.token_hex(12)}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": session_id,
                "object": "checkout.session",
                "amount_total": amount,
                "currency": "eur",
                "mode": "payment",
                "payment_intent": f"pi_bench_{secrets.token_hex(8)}",
                "payment_status": "paid",
                "status": "complete",
            }
        },
    }
    return json.dumps(event, indent=2).encode()


async def measure_intake(
    *,
    payments_urls: Sequence[str],
    payments_conn: asyncpg.Connection,
    seconds: float,
    concurrency: int,
    duplicate_ratio: float = 0.2,
) -> dict[str, Any]:
    sessions = [
        r["session_id"]
        for r in await payments_conn.fetch(
            "SELECT session_id FROM payment_sessions WHERE status = 'complete' LIMIT 500"
        )
    ]
    if not sessions:
        # No paid card session to point at: an unknown session id would be kept for replay and
        # retried every few seconds, skewing later phases, so measure nothing instead.
        return {"error": "no completed card session to address events to"}
    rng = random.Random(7)
    sent: list[bytes] = []
    unique_ok: set[bytes] = set()
    answered = {"ok": 0, "duplicates_sent": 0, "errors": 0}
    urls = itertools.cycle(payments_urls)
    stop_at = time.monotonic() + seconds

    async def worker(http: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            duplicate = bool(sent) and rng.random() < duplicate_ratio
            payload = rng.choice(sent) if duplicate else make_event(rng.choice(sessions))
            if not duplicate:
                sent.append(payload)
            # Signed per attempt, as Stripe does: a redelivery carries a fresh timestamp.
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": signature_header(payload, WEBHOOK_SECRET),
            }
            try:
                response = await http.post(
                    f"{next(urls)}/webhooks/stripe", content=payload, headers=headers
                )
            except httpx.HTTPError:
                answered["errors"] += 1
                continue
            if response.status_code == 200:
                answered["ok"] += 1
                answered["duplicates_sent"] += duplicate
                unique_ok.add(payload)
            else:
                answered["errors"] += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        started = time.monotonic()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    stored = await payments_conn.fetchval(
        "SELECT count(*) FROM stripe_events WHERE event_id LIKE $1", EVENT_PREFIX + "%"
    )
    unprocessed = await payments_conn.fetchval(
        "SELECT count(*) FROM stripe_events WHERE event_id LIKE $1 AND processed_at IS NULL",
        EVENT_PREFIX + "%",
    )
    return {
        "events_per_s": round(answered["ok"] / elapsed, 1),
        "answered_200": answered["ok"],
        "duplicates_sent": answered["duplicates_sent"],
        "errors": answered["errors"],
        "unique_events": len(unique_ok),
        "stored": int(stored),
        # Every unique event stored exactly once, duplicates not at all.
        "dedup_correct": int(stored) == len(unique_ok),
        "left_unprocessed": int(unprocessed),
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
    }
