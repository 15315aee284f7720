"""The stack as separate processes (the four services, PostgreSQL, RabbitMQ, the simulators)
for the integration tests: started and torn down around a test module, driven like a shopper and
an operator, each service's own tables read for the assertions."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from devstack.stack import (
    JWT_SECRET,
    SERVICES,
    STRIPE_KEY,
    Stack,
    create_stack,
    delete_broker_namespace,
    drop_stack_databases,
)
from shared.auth import issue_token
from shared.db import make_engine
from shared.topology import Names
from tests.support.waiting import eventually

TERMINAL = {"completed", "partially_completed", "cancelled", "refunded"}
OPERATOR_TOKEN = issue_token(JWT_SECRET, "ops", roles=("operator",))


@contextlib.asynccontextmanager
async def running_stack(
    postgres_admin_url: str,
    rabbitmq_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    overrides: dict[str, dict[str, str]] | None = None,
) -> AsyncIterator[Stack]:
    stack = await create_stack(
        postgres_admin_url,
        rabbitmq_url,
        log_dir=tmp_path_factory.mktemp("stack-logs"),
        overrides=overrides,
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
        await delete_broker_namespace(rabbitmq_url, Names(stack.namespace))


def stack_fixture(
    overrides: dict[str, dict[str, str]] | None = None,
    *,
    catalogue: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[..., AsyncIterator[Stack]]:
    """A test module's `stack` fixture (`stack = stack_fixture(...)`): one stack for the whole
    module, each process's environment overridden by `overrides`, with `catalogue` items (id ->
    fields) put in the cart's catalogue before the first test."""

    @pytest_asyncio.fixture(scope="module", loop_scope="session")
    async def stack(
        postgres_admin_url: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
    ) -> AsyncIterator[Stack]:
        async with running_stack(
            postgres_admin_url, rabbitmq_url, tmp_path_factory, overrides
        ) as started:
            for item_id, item in (catalogue or {}).items():
                await put_catalogue_item(started, item_id, **item)
            yield started

    return stack


@contextlib.asynccontextmanager
async def stripe_sim_client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the stack's Stripe simulator, with the stack's API key. The faults a
    test injected are cleared when it ends: they are global to the simulator."""
    headers = {"Authorization": f"Bearer {STRIPE_KEY}"}
    async with httpx.AsyncClient(
        base_url=stack.url("stripe_sim"), headers=headers, timeout=10
    ) as client:
        yield client
        await client.delete("/_sim/faults")


async def set_faults(sim: httpx.AsyncClient, **faults: Any) -> None:
    """Injects faults into the stack's Stripe simulator (`/_sim/faults`)."""
    response = await sim.post("/_sim/faults", json=faults)
    assert response.status_code == 200, response.text


async def sessions_at_stripe(sim: httpx.AsyncClient, order_id: str) -> list[dict[str, Any]]:
    """The Checkout Sessions the simulator holds for this order, as its API lists them."""
    response = await sim.get("/v1/checkout/sessions", params={"limit": 100})
    assert response.status_code == 200, response.text
    return [s for s in response.json()["data"] if s["client_reference_id"] == order_id]


async def pay(sim: httpx.AsyncClient, order: dict[str, Any], **body: Any) -> None:
    """Pays the order's Checkout Session at the simulator (`body`: how, e.g. a delayed method)."""
    session_id = order["payment_url"].rsplit("/", 1)[-1]
    response = await sim.post(f"/_sim/sessions/{session_id}/pay", json=body or None)
    assert response.status_code == 200, response.text


def failing_panel_overrides(
    *plans: str, capacity: Mapping[str, int] | None = None
) -> dict[str, dict[str, str]]:
    """A stack whose server panel refuses `plans` and builds at most `capacity[plan]` servers
    of a plan named there, with fast Stripe retries."""
    panel = {"PANEL_SIM_FAIL_PLANS": ",".join(plans)}
    if capacity:
        panel["PANEL_SIM_PLAN_CAPACITY"] = ",".join(f"{p}={n}" for p, n in capacity.items())
    return {
        "panel_sim": panel,
        "payments": {
            "PAYMENTS_STRIPE_RETRY_BASE_SECONDS": "0.1",
            "PAYMENTS_STRIPE_RETRY_CAP_SECONDS": "0.3",
        },
    }


class Shopper:
    def __init__(self, stack: Stack, user_id: str | None = None) -> None:
        self.stack = stack
        self.user_id = user_id or f"shopper-{uuid.uuid4().hex[:8]}"
        self.headers = {"Authorization": f"Bearer {issue_token(JWT_SECRET, self.user_id)}"}

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

    async def cancel(self, order_id: str) -> httpx.Response:
        async with httpx.AsyncClient(headers=self.headers, timeout=10) as http:
            return await http.post(self.url("orders", f"/orders/{order_id}/cancel"))

    async def wait_for(
        self, order_id: str, statuses: set[str], within: float = 30.0
    ) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def reached() -> bool:
            order = await self.order(order_id)
            if order is not None:
                found.clear()
                found.update(order)
            return order is not None and order["status"] in statuses

        await eventually(reached, within=within)
        return found


def history(order: dict[str, Any]) -> list[str]:
    """The statuses an order went through, oldest first."""
    return [h["status"] for h in order["history"]]


async def grant(stack: Stack, user_id: str, credits: int) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            stack.url("payments") + f"/accounts/{user_id}/grants",
            json={"credits": credits, "reason": "test grant"},
            headers={
                "Authorization": f"Bearer {OPERATOR_TOKEN}",
                "Idempotency-Key": f"grant-{user_id}",
            },
        )
        assert response.status_code in (200, 201), response.text


async def put_catalogue_item(stack: Stack, item_id: str, **item: Any) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.put(
            stack.url("cart") + f"/catalogue/items/{item_id}",
            json=item,
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
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


async def balance(stack: Stack, user_id: str) -> dict[str, int]:
    found = await rows(
        stack,
        "payments",
        "SELECT available, reserved FROM credit_accounts WHERE user_id = :u",
        u=user_id,
    )
    return found[0] if found else {"available": 0, "reserved": 0}


async def ledger(stack: Stack, order_id: str) -> list[tuple[str, int]]:
    entries = await rows(
        stack,
        "payments",
        "SELECT kind, amount FROM ledger_entries WHERE order_id = :o ORDER BY id",
        o=order_id,
    )
    return [(e["kind"], e["amount"]) for e in entries]


async def cart_status_is(stack: Stack, checkout_id: str, status: str) -> bool:
    found = await rows(
        stack,
        "cart",
        "SELECT carts.status FROM carts JOIN checkouts ON checkouts.cart_id = carts.id WHERE checkouts.id = :c",
        c=checkout_id,
    )
    return found == [{"status": status}]


async def assert_messaging_settled(
    stack: Stack, order_id: str, consumers: tuple[str, ...] = ("orders", "payments", "provisioning")
) -> None:
    """Every service published everything it wrote, and each of `consumers` applied its part."""

    async def outboxes_drained() -> bool:
        for service in SERVICES:
            pending = await rows(
                stack, service, "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"
            )
            if pending[0]["n"] != 0:
                return False
        return True

    await eventually(outboxes_drained, within=10)
    for service in consumers:
        handled = await rows(
            stack, service, "SELECT handler FROM inbox WHERE correlation_id = :c", c=order_id
        )
        assert handled, f"{service} has no inbox rows for {order_id}"
