"""The cart service on the one rig, with what its tests do over and over: carts with lines,
checkouts, sessions, catalogue items."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from services.cart.settings import CartSettings
from shared.messages import Envelope
from shared.messages.contracts import CheckoutRequested
from tests.support.rig import ServiceRig, settings_for


def cart_settings(database_url: str, **overrides: Any) -> CartSettings:
    return settings_for(CartSettings, database_url, **overrides)


class CartRig(ServiceRig):
    async def new_cart(self, user_id: str = "alice", **lines: int) -> str:
        """A cart of `user_id` holding `item_id=quantity` lines (dashes written as `_`)."""
        response = await self.http.post("/carts", headers=self.as_user(user_id))
        assert response.status_code == 201, response.text
        cart_id: str = response.json()["cart_id"]
        for item, quantity in lines.items():
            put = await self.put_line(cart_id, item.replace("_", "-"), quantity, user_id)
            assert put.status_code == 200, put.text
        return cart_id

    async def checkout(
        self, cart_id: str, key: str, user_id: str = "alice", body: Any = None
    ) -> httpx.Response:
        headers = {**self.as_user(user_id), "Idempotency-Key": key}
        return await self.http.post(f"/carts/{cart_id}/checkout", json=body, headers=headers)

    async def checking_out(self, key: str, user_id: str = "alice", **lines: int) -> tuple[str, str]:
        """(cart id, checkout id) of a new cart of `lines` (default one 10-session package)
        checked out with Idempotency-Key `key`: its CheckoutRequested sent, no outcome yet."""
        cart_id = await self.new_cart(user_id, **(lines or {"pkg_10": 1}))
        response = await self.checkout(cart_id, key, user_id)
        assert response.status_code == 202, response.text
        return cart_id, str(response.json()["checkout_id"])

    async def checkout_state(
        self, cart_id: str, checkout_id: str, user_id: str = "alice"
    ) -> tuple[str, str, str | None]:
        """(cart status, checkout status, checkout reason), as the shopper reads them."""
        headers = self.as_user(user_id)
        cart = (await self.http.get(f"/carts/{cart_id}", headers=headers)).json()
        checkout = (await self.http.get(f"/checkouts/{checkout_id}", headers=headers)).json()
        return cart["status"], checkout["status"], checkout["reason"]

    async def put_line(
        self, cart_id: str, item_id: str, quantity: int, user_id: str = "alice", **extra: Any
    ) -> httpx.Response:
        return await self.http.put(
            f"/carts/{cart_id}/lines/{item_id}",
            json={"quantity": quantity, **extra},
            headers=self.as_user(user_id),
        )

    async def open_session(
        self, cart_id: str, user_id: str = "alice", body: Any = None
    ) -> httpx.Response:
        return await self.http.post(
            f"/carts/{cart_id}/sessions", json=body, headers=self.as_user(user_id)
        )

    async def session(self, session_id: str, user_id: str = "alice") -> httpx.Response:
        return await self.http.get(f"/sessions/{session_id}", headers=self.as_user(user_id))

    async def recover(self, session_id: str, user_id: str = "alice") -> httpx.Response:
        return await self.http.post(
            f"/sessions/{session_id}/recover", headers=self.as_user(user_id)
        )

    async def put_item(self, item_id: str, **item: Any) -> httpx.Response:
        body = {"kind": "session_package", "name": item_id, "currency": "EUR", **item}
        return await self.http.put(
            f"/catalogue/items/{item_id}", json=body, headers=self.as_user("olga", operator=True)
        )

    async def requested_for(self, cart_id: str) -> list[Envelope]:
        """The CheckoutRequested messages this cart's checkouts sent, oldest first."""
        return [
            envelope
            for envelope in await self.emitted(CheckoutRequested.TYPE)
            if envelope.payload["cart_id"] == cart_id
        ]


# The fixture factory's type, for tests that build carts with their own settings.
MakeCart = Callable[..., Awaitable[CartRig]]
