"""The happy path end to end: the four services as separate processes on the real RabbitMQ and
PostgreSQL, the Stripe simulator behind the official SDK, driven over HTTP like a shopper.

After each checkout the test reads every service's own tables, not just the API."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from shared.auth import issue_token
from shared.db import make_engine
from shared.testing.stack import JWT_SECRET, SERVICES, Stack, create_stack, drop_stack_databases
from shared.testing.waiting import eventually
from shared.topology import Names

TERMINAL = {"completed", "partially_completed", "cancelled", "refunded"}
START_CREDITS = 1000


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    postgres_admin_url: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    stack = await create_stack(
        postgres_admin_url, rabbitmq_url, log_dir=tmp_path_factory.mktemp("stack-logs")
    )
    try:
        await asyncio.to_thread(stack.migrate)
        await asyncio.to_thread(stack.start)
        yield stack
    finally:
        await asyncio.to_thread(stack.stop)
        for name, proc in stack.procs.items():
            print(f"--- last lines of {name} log ---")
            print("\n".join(proc.log_path.read_text(errors="replace").splitlines()[-15:]))
        await drop_stack_databases(postgres_admin_url, stack)
        await _delete_broker_namespace(rabbitmq_url, Names(stack.namespace))


async def _delete_broker_namespace(url: str, names: Names) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for service in SERVICES:
            await channel.queue_delete(names.queue(service))
            await channel.queue_delete(names.dlq(service))
        for exchange in (names.events, names.commands, names.dead_letters):
            await channel.exchange_delete(exchange)


class Shopper:
    def __init__(self, stack: Stack, user_id: str) -> None:
        self.stack = stack
        self.user_id = user_id
        self.headers = {"Authorization": f"Bearer {issue_token(JWT_SECRET, user_id)}"}

    def url(self, service: str, path: str) -> str:
        return self.stack.url(service) + path

    async def checkout(self, lines: dict[str, int], *, use_credits: bool) -> tuple[str, float]:
        async with httpx.AsyncClient(headers=self.headers, timeout=10) as http:
            cart = (await http.post(self.url("cart", "/carts"))).raise_for_status().json()
            for item_id, quantity in lines.items():
                response = await http.put(
                    self.url("cart", f"/carts/{cart['cart_id']}/lines/{item_id}"),
                    json={"quantity": quantity},
                )
                response.raise_for_status()
            started = time.monotonic()
            response = await http.post(
                self.url("cart", f"/carts/{cart['cart_id']}/checkout"),
                json={"use_credits": use_credits},
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            assert response.status_code == 202, response.text
            body = response.json()
            assert body["order_id"] == body["checkout_id"]
            assert response.headers["X-Trace-Id"] == body["checkout_id"]
            return str(body["order_id"]), started

    async def order(self, order_id: str) -> dict[str, Any] | None:
        async with httpx.AsyncClient(headers=self.headers, timeout=10) as http:
            response = await http.get(self.url("orders", f"/orders/{order_id}"))
            if response.status_code == 404:
                return None
            response.raise_for_status()
            return dict(response.json())

    async def wait_for(
        self, order_id: str, statuses: set[str], within: float = 30.0
    ) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def reached() -> bool:
            order = await self.order(order_id)
            if order is not None:
                found.update(order)
            return order is not None and order["status"] in statuses

        await eventually(reached, within=within)
        return found


async def grant(stack: Stack, user_id: str, credits: int) -> None:
    token = issue_token(JWT_SECRET, "ops", roles=("operator",))
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            stack.url("payments") + f"/accounts/{user_id}/grants",
            json={"credits": credits, "reason": "test grant"},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"grant-{user_id}"},
        )
        assert response.status_code in (200, 201), response.text


async def rows(stack: Stack, service: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    engine = make_engine(stack.database_urls[service])
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(sql), params)
            return [dict(row._mapping) for row in result]
    finally:
        await engine.dispose()


async def assert_messaging_settled(stack: Stack, order_id: str) -> None:
    """Every service published everything it wrote for this checkout, and consumed its part."""

    async def outboxes_drained() -> bool:
        for service in SERVICES:
            pending = await rows(
                stack, service, "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"
            )
            if pending[0]["n"] != 0:
                return False
        return True

    await eventually(outboxes_drained, within=10)
    for service in ("orders", "payments", "provisioning"):
        handled = await rows(
            stack, service, "SELECT handler FROM inbox WHERE correlation_id = :c", c=order_id
        )
        assert handled, f"{service} has no inbox rows for {order_id}"


async def test_credit_only_checkout_completes_and_every_service_agrees(stack: Stack) -> None:
    shopper = Shopper(stack, f"alice-{uuid.uuid4().hex[:6]}")
    await grant(stack, shopper.user_id, START_CREDITS)

    order_id, started = await shopper.checkout({"pkg-10": 1, "vps-small": 1}, use_credits=True)
    order = await shopper.wait_for(order_id, TERMINAL)
    elapsed = time.monotonic() - started
    print(f"credit-only checkout took {elapsed * 1000:.0f} ms to complete")

    assert order["status"] == "completed", order
    assert [h["status"] for h in order["history"]] == [
        "pending",
        "paid",
        "provisioning",
        "completed",
    ]
    assert order["credits_total"] == 400 + 120 and order["money_total"] == 0

    # orders
    saga = await rows(
        stack, "orders", "SELECT step, version FROM saga_instances WHERE id = :i", i=order_id
    )
    assert saga == [{"step": "done", "version": saga[0]["version"]}] and saga[0]["version"] >= 5
    # payments: reserve and capture, balance lowered by exactly the order's credits
    entries = await rows(
        stack,
        "payments",
        "SELECT kind, amount, trace_id FROM ledger_entries WHERE order_id = :o ORDER BY id",
        o=order_id,
    )
    assert [(e["kind"], e["amount"]) for e in entries] == [("reserve", 520), ("capture", 520)]
    assert {e["trace_id"] for e in entries} == {order_id}
    account = await rows(
        stack,
        "payments",
        "SELECT available, reserved FROM credit_accounts WHERE user_id = :u",
        u=shopper.user_id,
    )
    assert account == [{"available": START_CREDITS - 520, "reserved": 0}]
    # provisioning: the job exists and is done; the sessions were granted
    jobs = await rows(
        stack,
        "provisioning",
        "SELECT id, status, user_id FROM jobs WHERE order_id = :o",
        o=order_id,
    )
    assert len(jobs) == 1 and jobs[0]["status"] == "done" and jobs[0]["user_id"] == shopper.user_id
    assert order["job_id"] == str(jobs[0]["id"])
    sessions = await rows(
        stack,
        "provisioning",
        "SELECT sum(sessions) AS n FROM entitlements WHERE order_id = :o",
        o=order_id,
    )
    assert sessions == [{"n": 10}]
    items = await rows(
        stack, "provisioning", "SELECT status FROM job_items WHERE job_id = :j", j=jobs[0]["id"]
    )
    assert sorted(i["status"] for i in items) == ["delivered", "delivered"]
    # cart: checked out
    await eventually(lambda: _cart_status_is(stack, order_id, "checked_out"), within=10)
    await assert_messaging_settled(stack, order_id)


async def test_card_checkout_pays_through_stripe_checkout_and_completes(stack: Stack) -> None:
    shopper = Shopper(stack, f"bob-{uuid.uuid4().hex[:6]}")

    order_id, started = await shopper.checkout(
        {"credits-100": 1, "vps-small": 1}, use_credits=False
    )
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL)
    assert order["status"] == "awaiting_payment", order
    assert order["payment_url"] and "/pay/" in order["payment_url"]

    # The shopper presses "pay" on the (simulated) Stripe-hosted page.
    async with httpx.AsyncClient(timeout=10) as browser:
        response = await browser.post(order["payment_url"], data={"outcome": "pay"})
        # Like Stripe's hosted page, the simulator redirects the shopper to success_url.
        assert response.status_code == 303, response.text
        session_id = order["payment_url"].rsplit("/", 1)[-1]
        assert response.headers["location"].endswith(f"order={order_id}&session={session_id}")
    order = await shopper.wait_for(order_id, TERMINAL)
    elapsed = time.monotonic() - started
    print(
        f"card checkout took {elapsed * 1000:.0f} ms to complete (including the simulated payment)"
    )

    assert order["status"] == "completed", order
    assert [h["status"] for h in order["history"]] == [
        "pending",
        "awaiting_payment",
        "paid",
        "provisioning",
        "completed",
    ]
    assert order["money_total"] == 1000 + 1500

    sessions = await rows(
        stack,
        "payments",
        "SELECT session_id, status, amount_total, payment_intent_id FROM payment_sessions WHERE order_id = :o",
        o=order_id,
    )
    assert len(sessions) == 1
    assert sessions[0]["status"] == "complete" and sessions[0]["amount_total"] == 2500
    assert sessions[0]["payment_intent_id"]
    events = await rows(
        stack, "payments", "SELECT type FROM stripe_events WHERE payload LIKE :p", p=f"%{order_id}%"
    )
    assert [e["type"] for e in events] == ["checkout.session.completed"]
    # No credits were reserved for a card-only order; the credit pack granted 100 credits.
    entries = await rows(
        stack,
        "payments",
        "SELECT kind, amount FROM ledger_entries WHERE order_id = :o ORDER BY id",
        o=order_id,
    )
    assert [(e["kind"], e["amount"]) for e in entries] == [("grant", 100)]
    account = await rows(
        stack,
        "payments",
        "SELECT available, reserved FROM credit_accounts WHERE user_id = :u",
        u=shopper.user_id,
    )
    assert account == [{"available": 100, "reserved": 0}]
    jobs = await rows(
        stack, "provisioning", "SELECT status FROM jobs WHERE order_id = :o", o=order_id
    )
    assert jobs == [{"status": "done"}]
    await eventually(lambda: _cart_status_is(stack, order_id, "checked_out"), within=10)
    await assert_messaging_settled(stack, order_id)


async def _cart_status_is(stack: Stack, checkout_id: str, status: str) -> bool:
    found = await rows(
        stack,
        "cart",
        "SELECT carts.status FROM carts JOIN checkouts ON checkouts.cart_id = carts.id WHERE checkouts.id = :c",
        c=checkout_id,
    )
    return found == [{"status": status}]
