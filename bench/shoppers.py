"""Shoppers with credits and carts ready to check out. Carts are filled before a step starts,
so the open-loop load is the checkout and its saga only, not cart editing."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import httpx

from devstack.stack import JWT_SECRET
from shared.auth import issue_token

T = TypeVar("T")

# A session package is provisioned inside provisioning (an entitlement), so neither basket
# depends on the panel simulator's HTTP latency. 400 credits, or 50.00 EUR by card.
ITEM = "pkg-10"
CREDITS_PER_CHECKOUT = 400
OPERATOR_TOKEN = issue_token(JWT_SECRET, "bench-operator", roles=("operator",))


@dataclass(frozen=True)
class Cart:
    user_id: str
    cart_id: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Checkout:
    """One checkout request as the shopper saw it: when it was sent (epoch seconds), the answer,
    and the order it started (None when refused)."""

    sent_at: float
    status_code: int
    order_id: str | None


async def bounded(calls: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))


class Shoppers:
    """A pool of users, each granted plenty of credits once; carts are handed out round-robin
    so concurrent checkouts rarely touch the same credit account."""

    def __init__(self, http: httpx.AsyncClient, cart_urls: Sequence[str], payments_url: str, *,
                 count: int, run_tag: str) -> None:  # fmt: skip
        self.http = http
        self.cart_urls = list(cart_urls)
        self.payments_url = payments_url
        self.users = [f"bench-{run_tag}-{i:04d}" for i in range(count)]
        self.headers = {
            u: {"Authorization": f"Bearer {issue_token(JWT_SECRET, u)}"} for u in self.users
        }
        self.cart_failures = 0
        self._next_user = itertools.cycle(self.users)
        self._next_cart_url = itertools.cycle(self.cart_urls)

    async def grant_all(self, credits: int) -> None:
        async def grant(user: str) -> None:
            response = await self.http.post(
                f"{self.payments_url}/accounts/{user}/grants",
                json={"credits": credits, "reason": "benchmark"},
                headers={
                    "Authorization": f"Bearer {OPERATOR_TOKEN}",
                    "Idempotency-Key": f"bench-grant-{user}",
                },
            )
            response.raise_for_status()

        await bounded([lambda u=u: grant(u) for u in self.users], 16)  # type: ignore[misc]

    async def make_carts(self, n: int) -> list[Cart]:
        """Up to `n` open carts holding one session package each."""

        async def make(user: str, base: str) -> Cart | None:
            headers = self.headers[user]
            # A shared PostgreSQL can refuse connections for a moment (max_connections is
            # machine-wide); retry briefly, then leave the cart out rather than end the run.
            for attempt in range(3):
                try:
                    response = await self.http.post(f"{base}/carts", headers=headers)
                    cart_id = response.raise_for_status().json()["cart_id"]
                    response = await self.http.put(
                        f"{base}/carts/{cart_id}/lines/{ITEM}",
                        json={"quantity": 1},
                        headers=headers,
                    )
                    response.raise_for_status()
                    return Cart(user, cart_id, headers)
                except httpx.HTTPError:
                    self.cart_failures += 1
                    await asyncio.sleep(0.2 * (attempt + 1))
            return None

        calls = [
            lambda u=next(self._next_user), b=next(self._next_cart_url): make(u, b)
            for _ in range(n)
        ]
        return [cart for cart in await bounded(calls, 32) if cart is not None]

    async def checkout(self, cart: Cart, *, use_credits: bool) -> Checkout:
        base = next(self._next_cart_url)
        sent_at = time.time()
        try:
            response = await self.http.post(
                f"{base}/carts/{cart.cart_id}/checkout",
                json={"use_credits": use_credits},
                headers={**cart.headers, "Idempotency-Key": str(uuid.uuid4())},
            )
        except httpx.HTTPError:
            return Checkout(sent_at, 0, None)
        order_id = response.json().get("order_id") if response.status_code == 202 else None
        return Checkout(sent_at, response.status_code, order_id)
