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
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from devstack.stack import WEBHOOK_SECRET
from simulators.stripe.signing import signature_header

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


async def seed_completed_sessions(payments_conn: asyncpg.Connection, count: int) -> None:
    """Completed card sessions written straight into payments, for `--webhooks-only`: the
    intake alone, without the card runs that would otherwise have paid them."""
    await payments_conn.executemany(
        "INSERT INTO payment_sessions (order_id, session_id, payment_intent_id, status,"
        " amount_total, amount_refunded, currency, url, expires_at, trace_id, created_at,"
        " updated_at) VALUES ($1, $2, $3, 'complete', 5000, 0, 'eur', '', now(), $1, now(),"
        " now())",
        [
            (order_id, f"cs_bench_{secrets.token_hex(10)}", f"pi_bench_{secrets.token_hex(8)}")
            for order_id in (str(uuid.uuid4()) for _ in range(count))
        ],
    )


class KeepAlive:
    """One HTTP/1.1 keep-alive connection, as Stripe's senders hold them. Hand-written because
    httpx's pool costs the sending process more CPU per request than the endpoint does: with it
    this machine measured about 170 requests/s even against `/health`, i.e. the client."""

    def __init__(self, host: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.host, self.reader, self.writer = host, reader, writer

    @classmethod
    async def open(cls, url: str) -> KeepAlive:
        parsed = urlsplit(url)
        reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port or 80)
        return cls(parsed.netloc, reader, writer)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        """The response's status code, its body read to the end."""
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = dict(line.lower().split(": ", 1) for line in head[1:] if ": " in line)
        if "content-length" not in fields:
            raise ValueError("response without Content-Length")
        await self.reader.readexactly(int(fields["content-length"]))
        return int(head[0].split(" ")[1])

    def close(self) -> None:
        self.writer.close()


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

    async def worker(url: str) -> None:
        connection: KeepAlive | None = None
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
                connection = connection or await KeepAlive.open(url)
                status = await connection.post("/webhooks/stripe", payload, headers)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                answered["errors"] += 1
                if connection is not None:
                    connection.close()
                connection = None
                continue
            if status == 200:
                answered["ok"] += 1
                answered["duplicates_sent"] += duplicate
                unique_ok.add(payload)
            else:
                answered["errors"] += 1
        if connection is not None:
            connection.close()

    started = time.monotonic()
    await asyncio.gather(*(worker(next(urls)) for _ in range(concurrency)))
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
