"""Checkout sessions survive the cart process: the whole topology as separate processes on the
real PostgreSQL and RabbitMQ, the cart service SIGKILLed and restarted between issuing a session
and checking out with it — the failure that in-memory sessions used to cause."""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import Any

import httpx

from devstack.stack import JWT_SECRET, Stack
from shared.auth import issue_token
from tests.support.stack import OPERATOR_TOKEN, TERMINAL, grant, stack_fixture
from tests.support.waiting import eventually

stack = stack_fixture()


class Shopper:
    def __init__(self, stack: Stack, name: str) -> None:
        self.stack = stack
        self.user_id = f"{name}-{uuid.uuid4().hex[:6]}"
        self.headers = {"Authorization": f"Bearer {issue_token(JWT_SECRET, self.user_id)}"}

    async def call(self, method: str, service: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(headers=self.headers, timeout=10) as http:
            return await http.request(method, self.stack.url(service) + path, **kwargs)

    async def cart_with(self, **lines: int) -> str:
        cart_id: str = (await self.call("POST", "cart", "/carts")).json()["cart_id"]
        for item, quantity in lines.items():
            response = await self.put_line(cart_id, item.replace("_", "-"), quantity)
            assert response.status_code == 200, response.text
        return cart_id

    async def put_line(
        self, cart_id: str, item_id: str, quantity: int, **extra: Any
    ) -> httpx.Response:
        return await self.call(
            "PUT", "cart", f"/carts/{cart_id}/lines/{item_id}", json={"quantity": quantity, **extra}
        )

    async def checkout(self, cart_id: str, session_id: str) -> httpx.Response:
        return await self.call(
            "POST",
            "cart",
            f"/carts/{cart_id}/checkout",
            json={"session_id": session_id},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )

    async def finished_order(self, order_id: str) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def terminal() -> bool:
            response = await self.call("GET", "orders", f"/orders/{order_id}")
            if response.status_code == 200:
                found.update(response.json())
            return found.get("status") in TERMINAL

        await eventually(terminal, within=30)
        return found


async def restart_cart(stack: Stack) -> None:
    """SIGKILL: no shutdown hook runs, nothing in memory can be saved."""
    before = stack.procs["cart"].popen
    await asyncio.to_thread(stack.restart, "cart", signal.SIGKILL)
    assert before is not None and before.returncode == -signal.SIGKILL
    assert stack.procs["cart"].popen is not before


async def test_a_session_survives_a_killed_cart_process_and_checks_out(stack: Stack) -> None:
    shopper = Shopper(stack, "restart")
    await grant(stack, shopper.user_id, 1000)
    cart_id = await shopper.cart_with(pkg_10=1, vps_small=1)
    opened = await shopper.call(
        "POST", "cart", f"/carts/{cart_id}/sessions", json={"use_credits": True}
    )
    assert opened.status_code == 201, opened.text
    session_id = opened.json()["session_id"]

    await restart_cart(stack)

    validated = await shopper.call("GET", "cart", f"/sessions/{session_id}")
    assert validated.status_code == 200
    assert validated.json() == {**opened.json(), "status": "active", "valid": True}
    response = await shopper.checkout(cart_id, session_id)
    assert response.status_code == 202, response.text
    assert response.json()["session_id"] == session_id

    order = await shopper.finished_order(response.json()["order_id"])
    assert order["status"] == "completed", order
    assert order["credits_total"] == 400 + 120
    cart = (await shopper.call("GET", "cart", f"/carts/{cart_id}")).json()
    assert cart["status"] == "checked_out"
    used = (await shopper.call("GET", "cart", f"/sessions/{session_id}")).json()
    assert (used["status"], used["code"]) == ("completed", "session_not_active")


async def test_switching_a_package_renews_the_session_across_a_restart(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.put(
            stack.url("cart") + "/catalogue/items/pkg-20",
            json={
                "kind": "session_package",
                "name": "20 coaching sessions",
                "unit_price": 9000,
                "currency": "EUR",
                "credit_price": 700,
                "units_per_item": 20,
            },
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        )
        assert response.status_code == 200, response.text
    shopper = Shopper(stack, "switch")
    await grant(stack, shopper.user_id, 1000)
    cart_id = await shopper.cart_with(pkg_10=1)
    old_id = (await shopper.call("POST", "cart", f"/carts/{cart_id}/sessions")).json()["session_id"]

    # The shopper goes back from checkout and takes the bigger package instead.
    switched = await shopper.put_line(cart_id, "pkg-20", 1, replaces="pkg-10")
    new_id = switched.json()["session_id"]
    assert new_id not in (None, old_id)
    await restart_cart(stack)

    stale = await shopper.checkout(cart_id, old_id)
    assert (stale.status_code, stale.json()["code"]) == (409, "session_invalidated")
    assert stale.json()["details"] == {"replaced_by": new_id}
    response = await shopper.checkout(cart_id, new_id)
    assert response.status_code == 202, response.text

    order = await shopper.finished_order(response.json()["order_id"])
    assert order["status"] == "completed", order
    assert order["credits_total"] == 700
