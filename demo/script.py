"""A scripted shopper: one credit-only and one card checkout, printing each saga step."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

TERMINAL = {"completed", "partially_completed", "cancelled", "refunded"}
Printer = Callable[[str], None]


class ScriptFailed(RuntimeError):
    pass


async def follow(
    http: httpx.AsyncClient,
    order_id: str,
    out: Printer,
    *,
    until: set[str],
    seen: int = 0,
    started: float | None = None,
    within: float = 30.0,
) -> tuple[dict[str, Any], int]:
    """Poll the order, printing each new status change, until it reaches one of `until`."""
    started = started or time.monotonic()
    deadline = time.monotonic() + within
    while True:
        response = await http.get(f"/api/orders/orders/{order_id}")
        if response.status_code == 200:
            order = response.json()
            for change in order["history"][seen:]:
                elapsed = time.monotonic() - started
                out(f"  +{elapsed:6.3f}s  {change['status']:<20} {change['reason']}")
            seen = len(order["history"])
            if order["status"] in until:
                return order, seen
        elif response.status_code != 404:  # 404: the saga has not started yet
            raise ScriptFailed(f"GET order: {response.status_code} {response.text}")
        if time.monotonic() > deadline:
            raise ScriptFailed(f"order {order_id} did not reach {sorted(until)} in {within}s")
        await asyncio.sleep(0.02)


async def checkout(
    http: httpx.AsyncClient, lines: dict[str, int], *, use_credits: bool, out: Printer
) -> tuple[str, float]:
    cart = (await http.post("/api/cart/carts")).raise_for_status().json()
    for item_id, quantity in lines.items():
        (
            await http.put(
                f"/api/cart/carts/{cart['cart_id']}/lines/{item_id}", json={"quantity": quantity}
            )
        ).raise_for_status()
    preview = await http.get(
        f"/api/cart/carts/{cart['cart_id']}", params={"use_credits": str(use_credits).lower()}
    )
    totals = preview.raise_for_status().json()["totals"]
    out(f"  cart {cart['cart_id']}: {totals}")
    started = time.monotonic()
    response = await http.post(
        f"/api/cart/carts/{cart['cart_id']}/checkout",
        json={"use_credits": use_credits},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    response.raise_for_status()
    return response.json()["order_id"], started


async def run_script(base_url: str, shopper_token: str, out: Printer = print) -> None:
    headers = {"Authorization": f"Bearer {shopper_token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as http:
        balance = (await http.get("/api/payments/accounts/me")).raise_for_status().json()
        out(f"shopper credit balance: {balance['available']}")

        out("\n1) credit-only checkout: 10 coaching sessions + a VPS, paid with credits")
        order_id, started = await checkout(
            http, {"pkg-10": 1, "vps-small": 1}, use_credits=True, out=out
        )
        order, _ = await follow(http, order_id, out, until=TERMINAL, started=started)
        _expect(order, "completed")

        out("\n2) card checkout: 100 credits + installation, paid by card through Stripe Checkout")
        order_id, started = await checkout(
            http, {"credits-100": 1, "setup-job": 1}, use_credits=False, out=out
        )
        order, seen = await follow(
            http, order_id, out, until={"awaiting_payment"} | TERMINAL, started=started
        )
        out(f"  shopper pays at {order['payment_url']}")
        async with httpx.AsyncClient(timeout=10) as browser:
            paid = await browser.post(order["payment_url"], data={"outcome": "pay"})
            if paid.status_code not in (200, 303):  # Stripe's page redirects to success_url
                raise ScriptFailed(f"payment page answered {paid.status_code}: {paid.text}")
        order, _ = await follow(http, order_id, out, until=TERMINAL, seen=seen, started=started)
        _expect(order, "completed")

        balance = (await http.get("/api/payments/accounts/me")).raise_for_status().json()
        entitlements = (
            (await http.get("/api/provisioning/entitlements/me")).raise_for_status().json()
        )
        out(f"\nshopper credit balance now: {balance['available']}")
        out(f"entitlements: {entitlements}")


def _expect(order: dict[str, Any], status: str) -> None:
    if order["status"] != status:
        raise ScriptFailed(f"order {order['id']} ended {order['status']}: {order['status_reason']}")
