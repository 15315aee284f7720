"""A read-only picture of the whole system after it has gone quiet: every service's tables, the
Stripe simulator's objects and the broker's queues. Taken once; the checks never do I/O.

Rows are plain dicts keyed by the column names of services/*/models.py, so a check reads like
the table it is about, and a test can build a snapshot by hand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import aio_pika
import httpx
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.exceptions import ChannelNotFoundEntity
from sqlalchemy import Column, Table, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from devstack.stack import STRIPE_KEY
from services.cart import models as cart
from services.orders import models as orders
from services.payments import models as payments
from services.provisioning import models as provisioning
from shared.db import make_engine
from shared.topology import SERVICES, Names

Row = Mapping[str, Any]
Rows = tuple[Row, ...]
REASON_HEADER = "x-dead-letter-reason"  # what shared/bus.py writes on a consumer's dead letter


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    # orders
    orders: Rows = ()
    order_lines: Rows = ()
    order_history: Rows = ()
    sagas: Rows = ()  # id, step, state (the saga's JSON)
    # payments
    accounts: Rows = ()
    ledger: Rows = ()
    reservations: Rows = ()
    payment_sessions: Rows = ()
    refunds: Rows = ()
    stripe_events: Rows = ()
    # provisioning
    jobs: Rows = ()
    job_items: Rows = ()
    job_units: Rows = ()  # one row per server of a server plan line
    entitlements: Rows = ()
    # cart
    carts: Rows = ()
    checkouts: Rows = ()
    # every service; each row also names its `service`; outbox rows carry the envelope's
    # `kind` and `target` (commands), which decide who must consume them, and its
    # `causation_id`
    outbox: Rows = ()
    inbox: Rows = ()
    dead_letters: Rows = ()  # service, message_id, message_type, correlation_id, reason
    queue_depths: Mapping[str, int] = field(default_factory=dict)  # ready messages per queue
    # Stripe simulator: sessions with their payment intent flattened in (order_id from metadata)
    sim_sessions: Rows = ()
    sim_refunds: Rows = ()  # id, payment_intent, amount, status, order_id, refund_key
    sim_event_count: int = 0
    sim_fault_counters: Mapping[str, int] | None = None


# --- databases -------------------------------------------------------------------------------


def _t(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


# Snapshot field -> (table, columns); wide audit columns (bodies, payloads) are left out.
_TABLES: dict[str, dict[str, tuple[Table, tuple[str, ...]]]] = {
    "orders": {
        "orders": (
            _t(orders.Order),
            (
                "id",
                "user_id",
                "cart_id",
                "status",
                "currency",
                "money_total",
                "credits_total",
                "job_id",
            ),
        ),
        "order_lines": (
            _t(orders.OrderLine),
            (
                "order_id",
                "line_no",
                "item_id",
                "kind",
                "name",
                "quantity",
                "unit_price",
                "unit_credits",
                "paid_with",
                "result",
            ),
        ),
        "order_history": (
            _t(orders.StatusChange),
            ("seq", "order_id", "status", "reason"),
        ),
        "sagas": (_t(orders.SagaInstance), ("id", "step", "state")),
    },
    "payments": {
        "accounts": (
            _t(payments.CreditAccount),
            ("user_id", "available", "reserved"),
        ),
        "ledger": (
            _t(payments.LedgerEntry),
            (
                "id",
                "user_id",
                "kind",
                "amount",
                "debit_account",
                "credit_account",
                "order_id",
                "reference",
            ),
        ),
        "reservations": (
            _t(payments.CreditReservation),
            ("order_id", "user_id", "credits", "captured", "refunded", "status"),
        ),
        "payment_sessions": (
            _t(payments.PaymentSession),
            (
                "order_id",
                "session_id",
                "payment_intent_id",
                "status",
                "amount_total",
                "amount_refunded",
            ),
        ),
        "refunds": (
            _t(payments.Refund),
            ("order_id", "refund_key", "stripe_refund_id", "amount", "status"),
        ),
        "stripe_events": (
            _t(payments.StripeEvent),
            ("event_id", "type", "object_id", "processed_at"),
        ),
    },
    "provisioning": {
        "jobs": (_t(provisioning.Job), ("id", "order_id", "status")),
        "job_items": (
            _t(provisioning.JobItem),
            ("job_id", "line_no", "kind", "quantity", "units_per_item", "status", "units_failed"),
        ),
        "job_units": (
            _t(provisioning.JobUnit),
            ("job_id", "line_no", "unit_no", "status"),
        ),
        "entitlements": (
            _t(provisioning.Entitlement),
            ("order_id", "line_no", "sessions"),
        ),
    },
    "cart": {
        "carts": (_t(cart.Cart), ("id", "status")),
        "checkouts": (_t(cart.Checkout), ("id", "cart_id", "status")),
    },
}
_OUTBOXES: dict[str, tuple[Table, Table]] = {
    "cart": (cart.outbox, cart.inbox),
    "orders": (orders.outbox, orders.inbox),
    "payments": (payments.outbox, payments.inbox),
    "provisioning": (provisioning.outbox, provisioning.inbox),
}


def _plain(value: Any) -> Any:
    # UUID primary keys (provisioning) compare with the string ids other services store.
    return (
        value
        if isinstance(value, str | int | float | bool | dict | list | datetime | None)
        else str(value)
    )


async def _read(conn: AsyncConnection, table: Table, columns: tuple[str, ...]) -> list[Row]:
    cols: list[Column[Any]] = [table.c[name] for name in columns]
    result = await conn.execute(select(*cols))
    return [{k: _plain(v) for k, v in row._mapping.items()} for row in result]


def _outbox_row(service: str, row: Row) -> Row:
    envelope = json.loads(row["body"])
    plain = {k: v for k, v in row.items() if k != "body"}
    return {
        **plain,
        "service": service,
        "kind": envelope.get("kind"),
        "target": envelope.get("target"),
        # The message that caused it (None when no message did: an API call, a deadline).
        "causation_id": envelope.get("causation_id"),
    }


async def _read_database(service: str, url: str) -> dict[str, list[Row]]:
    engine = make_engine(url, pool_size=1)
    found: dict[str, list[Row]] = {}
    try:
        async with engine.connect() as conn:
            # One snapshot per database: every table read as of the same instant.
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
            for name, (table, columns) in _TABLES[service].items():
                found[name] = await _read(conn, table, columns)
            outbox, inbox = _OUTBOXES[service]
            raw = await _read(
                conn,
                outbox,
                ("seq", "message_id", "message_type", "correlation_id", "body", "published_at"),
            )
            found["outbox"] = [_outbox_row(service, r) for r in raw]
            found["inbox"] = [
                {**r, "service": service}
                for r in await _read(
                    conn, inbox, ("message_id", "handler", "message_type", "correlation_id")
                )
            ]
            await conn.rollback()
    finally:
        await engine.dispose()
    return found


# --- broker ----------------------------------------------------------------------------------


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def _dead_letter(service: str, message: AbstractIncomingMessage) -> Row:
    headers = message.headers or {}
    reason = _text(headers.get(REASON_HEADER))
    if not reason:
        # Dead-lettered by the broker itself (delivery limit): the reason is in x-death.
        deaths = headers.get("x-death") or []
        first = deaths[0] if isinstance(deaths, list) and deaths else {}
        why = first.get("reason") if isinstance(first, dict) else None
        reason = f"broker: {_text(why)}" if why else ""
    try:
        correlation_id = json.loads(message.body).get("correlation_id")
    except (ValueError, AttributeError):
        correlation_id = None
    return {
        "service": service,
        "message_id": message.message_id,
        "message_type": message.type,
        "correlation_id": correlation_id,
        "reason": reason,
    }


async def _depth(channel: AbstractChannel, queue: str) -> int | None:
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except ChannelNotFoundEntity:
        return None
    return declared.declaration_result.message_count or 0


async def _read_broker(url: str, namespace: str) -> tuple[list[Row], dict[str, int]]:
    """Queue depths by passive declare, DLQ contents by basic.get then nack-requeue: nothing is
    consumed. A quorum queue counts every return as a delivery (x-delivery-count goes up with
    each peek), so the service queues, which have a delivery limit, are never peeked; the DLQs
    have none on RabbitMQ 3.x (4.x gives quorum queues a default limit of 20: peek sparingly)."""
    names = Names(namespace)
    letters: list[Row] = []
    depths: dict[str, int] = {}
    connection = await aio_pika.connect(url)
    async with connection:
        for service in SERVICES:
            for queue in (names.queue(service), names.dlq(service)):
                # A passive declare of a missing queue closes its channel: one channel each.
                async with connection.channel() as channel:
                    depth = await _depth(channel, queue)
                if depth is not None:
                    depths[queue] = depth
            if not depths.get(names.dlq(service)):
                continue
            async with connection.channel() as channel:
                dlq = await channel.get_queue(names.dlq(service), ensure=False)
                taken: list[AbstractIncomingMessage] = []
                for _ in range(depths[names.dlq(service)]):
                    message = await dlq.get(no_ack=False, fail=False)
                    if message is None:
                        break
                    taken.append(message)
                letters.extend(_dead_letter(service, m) for m in taken)
                for message in taken:
                    await message.nack(requeue=True)
    return letters, depths


# --- Stripe simulator ------------------------------------------------------------------------


class _Retryable(Exception):
    pass


async def _get(http: httpx.AsyncClient, path: str, params: dict[str, Any] | None = None) -> Any:
    # Injected API faults may still be armed when the checker runs: 5xx and 429 are retried.
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(8),
        wait=wait_fixed(0.25),
        retry=retry_if_exception_type((_Retryable, httpx.TransportError)),
        reraise=True,
    ):
        with attempt:
            response = await http.get(path, params=params)
            if response.status_code >= 500 or response.status_code == 429:
                raise _Retryable(f"{path}: {response.status_code}")
            response.raise_for_status()
            return response.json()
    raise AssertionError("unreachable")


async def _list_all(
    http: httpx.AsyncClient, path: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page_params = {**(params or {}), "limit": 100}
        if after is not None:
            page_params["starting_after"] = after
        page = await _get(http, path, page_params)
        items.extend(page["data"])
        if not page["has_more"] or not page["data"]:
            return items
        after = page["data"][-1]["id"]


def _sim_session(obj: dict[str, Any]) -> Row:
    intent = obj.get("payment_intent")
    intent = intent if isinstance(intent, dict) else {}
    metadata = obj.get("metadata") or {}
    return {
        "id": obj["id"],
        "order_id": metadata.get("order_id") or obj.get("client_reference_id"),
        "status": obj.get("status"),
        "payment_status": obj.get("payment_status"),
        "amount_total": obj.get("amount_total"),
        "currency": obj.get("currency"),
        "payment_intent": intent.get("id"),
        "intent_status": intent.get("status"),
        "amount_received": intent.get("amount_received") or 0,
    }


def _sim_refund(obj: dict[str, Any]) -> Row:
    metadata = obj.get("metadata") or {}
    return {
        "id": obj["id"],
        "payment_intent": obj.get("payment_intent"),
        "amount": obj.get("amount"),
        "status": obj.get("status"),
        "order_id": metadata.get("order_id"),
        "refund_key": metadata.get("refund_key"),
    }


async def _read_sim(url: str) -> tuple[list[Row], list[Row], int, dict[str, int] | None]:
    headers = {"Authorization": f"Bearer {STRIPE_KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        # Listing makes the simulator expire sessions past their time first, as Stripe's clock
        # would have: the only state change a read can cause.
        sessions = await _list_all(
            http, "/v1/checkout/sessions", {"expand[0]": "data.payment_intent"}
        )
        events = await _list_all(http, "/v1/events")
        # Refunds have no list endpoint: their ids come from the events, their state from a GET.
        refund_ids = {e["data"]["object"]["id"] for e in events if e["type"].startswith("refund.")}
        refunds = [await _get(http, f"/v1/refunds/{rid}") for rid in sorted(refund_ids)]
        faults = await http.get("/_sim/faults")
        counters = faults.json().get("counters") if faults.status_code == 200 else None
    return (
        [_sim_session(s) for s in sessions],
        [_sim_refund(r) for r in refunds],
        len(events),
        counters,
    )


# --- all together ----------------------------------------------------------------------------


async def take_snapshot(
    database_urls: dict[str, str], rabbitmq_url: str, namespace: str, stripe_sim_url: str
) -> Snapshot:
    """Reads everything the invariants need; call it only once the system is quiet."""
    tables: dict[str, list[Row]] = {"outbox": [], "inbox": []}
    for service in SERVICES:
        for name, rows in (await _read_database(service, database_urls[service])).items():
            tables.setdefault(name, []).extend(rows)
    letters, depths = await _read_broker(rabbitmq_url, namespace)
    sim_sessions, sim_refunds, sim_events, counters = await _read_sim(stripe_sim_url)

    def t(name: str) -> Rows:
        return tuple(tables.get(name, ()))

    return Snapshot(
        taken_at=datetime.now(UTC),
        orders=t("orders"),
        order_lines=t("order_lines"),
        order_history=t("order_history"),
        sagas=t("sagas"),
        accounts=t("accounts"),
        ledger=t("ledger"),
        reservations=t("reservations"),
        payment_sessions=t("payment_sessions"),
        refunds=t("refunds"),
        stripe_events=t("stripe_events"),
        jobs=t("jobs"),
        job_items=t("job_items"),
        job_units=t("job_units"),
        entitlements=t("entitlements"),
        carts=t("carts"),
        checkouts=t("checkouts"),
        outbox=t("outbox"),
        inbox=t("inbox"),
        dead_letters=tuple(letters),
        queue_depths=depths,
        sim_sessions=tuple(sim_sessions),
        sim_refunds=tuple(sim_refunds),
        sim_event_count=sim_events,
        sim_fault_counters=counters,
    )
