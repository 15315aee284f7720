"""The load driver: shoppers acting out their scenarios concurrently through the HTTP APIs.

Each shopper owns a fresh account, is granted the credits its plan needs, fills a cart, checks out
and then pays, fails, abandons or cancels through the Stripe simulator and the orders API. The
driver records what it saw; the invariant checker, not the driver, judges the system.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaos.client import ServiceClient
from chaos.scenarios import Plan, Scenario
from services.orders.saga import state
from shared.auth import issue_token

# The orders service's own terminal statuses (StrEnum members compare equal to the API's strings).
TERMINAL = frozenset(str(s) for s in state.TERMINAL)


@dataclass
class Record:
    """What one shopper saw."""

    index: int
    scenario: Scenario
    user_id: str
    order_id: str | None = None
    # The status the order had when the shopper stopped watching (the checker reads the final one).
    seen_status: str | None = None
    started: float = 0.0
    finished: float | None = None
    error: str | None = None
    # The change-cart shopper's checkout with its stale session; must be refused.
    stale_session_answer: int | None = None
    notes: list[str] = field(default_factory=list)


class Driver:
    def __init__(
        self,
        client: ServiceClient,
        *,
        jwt_secret: str,
        operator_token: str,
        run_tag: str,
        settle_within: float = 240.0,
    ) -> None:
        self._client = client
        self._jwt_secret = jwt_secret
        self._operator = {"Authorization": f"Bearer {operator_token}"}
        self._tag = run_tag
        self._settle_within = settle_within

    async def run(
        self,
        plans: list[Plan],
        *,
        concurrency: int,
        on_done: Callable[[Record], None] | None = None,
    ) -> list[Record]:
        records = [Record(i, p.scenario, f"chaos-{self._tag}-{i:05d}") for i, p in enumerate(plans)]
        gate = asyncio.Semaphore(concurrency)

        async def one(record: Record, plan: Plan) -> None:
            async with gate:
                record.started = time.monotonic()
                try:
                    await self._shop(record, plan)
                except Exception as exc:  # recorded and reported; one shopper never stops the run
                    record.error = f"{type(exc).__name__}: {exc}"
                record.finished = time.monotonic()
                if on_done is not None:
                    on_done(record)

        await asyncio.gather(*(one(r, p) for r, p in zip(records, plans, strict=True)))
        return records

    # --- one shopper --------------------------------------------------------------------------

    async def _shop(self, record: Record, plan: Plan) -> None:
        me = {"Authorization": f"Bearer {issue_token(self._jwt_secret, record.user_id)}"}
        if plan.credits:
            await self._grant(record.user_id, plan.credits)
        cart_id = await self._fill_cart(me, plan.lines)
        session_id: str | None = None
        if plan.scenario is Scenario.CHANGE_CART:
            session_id = await self._change_cart_after_session(record, me, cart_id, plan)
        order_id = await self._checkout(me, cart_id, plan.use_credits, session_id)
        record.order_id = order_id
        order = await self._await_status(
            me, order_id, TERMINAL | {"awaiting_payment"}, within=self._settle_within
        )
        if order["status"] == "awaiting_payment":
            await self._act_on_payment(record, me, order)
            order = await self._await_status(me, order_id, TERMINAL, within=self._settle_within)
        record.seen_status = order["status"]

    async def _grant(self, user_id: str, credits: int) -> None:
        response = await self._client.request(
            "payments",
            "POST",
            f"/accounts/{user_id}/grants",
            json={"credits": credits, "reason": "chaos run"},
            headers={**self._operator, "Idempotency-Key": f"grant-{user_id}"},
        )
        _expect(response, 200, 201)

    async def _fill_cart(self, me: dict[str, str], lines: dict[str, int]) -> str:
        # A retried POST /carts may leave an empty open cart behind: harmless, never frozen.
        cart = _expect(await self._client.request("cart", "POST", "/carts", headers=me), 201)
        cart_id = str(cart["cart_id"])
        for item_id, quantity in lines.items():
            await self._put_line(me, cart_id, item_id, quantity)
        return cart_id

    async def _put_line(self, me: dict[str, str], cart_id: str, item: str, qty: int) -> None:
        response = await self._client.request(
            "cart", "PUT", f"/carts/{cart_id}/lines/{item}", json={"quantity": qty}, headers=me
        )
        _expect(response, 200, 201)

    async def _change_cart_after_session(
        self, record: Record, me: dict[str, str], cart_id: str, plan: Plan
    ) -> str:
        """Open a session, change the cart, try the stale session, return the renewed one."""
        opened = await self._client.request(
            "cart", "POST", f"/carts/{cart_id}/sessions", json={"use_credits": True}, headers=me
        )
        stale = str(_expect(opened, 200, 201)["session_id"])
        await self._put_line(me, cart_id, "pkg-10", plan.lines["pkg-10"] + 1)
        refused = await self._client.request(
            "cart",
            "POST",
            f"/carts/{cart_id}/checkout",
            json={"session_id": stale},
            headers={**me, "Idempotency-Key": str(uuid.uuid4())},
        )
        record.stale_session_answer = refused.status_code
        renewed = await self._client.request(
            "cart", "POST", f"/carts/{cart_id}/sessions", json={"use_credits": True}, headers=me
        )
        return str(_expect(renewed, 200, 201)["session_id"])

    async def _checkout(
        self, me: dict[str, str], cart_id: str, use_credits: bool, session_id: str | None
    ) -> str:
        body: dict[str, Any] = (
            {"session_id": session_id} if session_id else {"use_credits": use_credits}
        )
        # One key for every attempt: a retry after a lost answer is the same checkout.
        key = str(uuid.uuid4())
        response = await self._client.request(
            "cart",
            "POST",
            f"/carts/{cart_id}/checkout",
            json=body,
            headers={**me, "Idempotency-Key": key},
        )
        return str(_expect(response, 200, 202)["order_id"])

    async def _act_on_payment(
        self, record: Record, me: dict[str, str], order: dict[str, Any]
    ) -> None:
        session_id = str(order["payment_url"]).rsplit("/", 1)[-1]
        match record.scenario:
            case Scenario.ABANDON_CANCEL:
                response = await self._client.request(
                    "orders", "POST", f"/orders/{order['id']}/cancel", headers=me
                )
                # 409 when a retried cancel finds the first one already compensating.
                _expect(response, 200, 409)
            case Scenario.ABANDON_EXPIRE:
                await self._sim(f"/_sim/sessions/{session_id}/expire_now")
            case Scenario.DELAYED_FAIL:
                await self._sim(f"/_sim/sessions/{session_id}/pay", {"payment_method": "delayed"})
                await self._sim(f"/_sim/sessions/{session_id}/async_result", {"outcome": "failed"})
            case _:
                await self._sim(f"/_sim/sessions/{session_id}/pay")

    async def _sim(self, path: str, body: dict[str, Any] | None = None) -> None:
        response = await self._client.request("stripe_sim", "POST", path, json=body)
        _expect(response, 200)

    async def _await_status(
        self, me: dict[str, str], order_id: str, statuses: frozenset[str], *, within: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + within
        delay = 0.05
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = await self._client.request(
                "orders", "GET", f"/orders/{order_id}", headers=me
            )
            # 404 until orders has consumed CheckoutRequested.
            if response.status_code == 200:
                last = response.json()
                if last["status"] in statuses:
                    return last
            elif response.status_code != 404:
                _expect(response, 200)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        raise TimeoutError(
            f"order {order_id} not in {sorted(statuses)} after {within}s "
            f"(last: {last.get('status')})"
        )


def _expect(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    if response.status_code not in statuses:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} -> "
            f"{response.status_code}: {response.text[:300]}"
        )
    return dict(response.json())
