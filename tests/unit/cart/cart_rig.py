"""Drives the cart service in tests: tokens, carts, checkouts, outbox reads, deliveries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import select

from services.cart.models import outbox
from services.cart.settings import CartSettings
from shared.auth import issue_token
from shared.memory_bus import MemoryBus
from shared.messages import Contract, Envelope
from shared.runtime import ServiceRuntime

SECRET = "cart-test-secret-long-enough-for-hs256"


def cart_settings(db_file: Path, **overrides: Any) -> CartSettings:
    return CartSettings(
        database_url=f"sqlite+aiosqlite:///{db_file}",
        broker_url="memory://",
        jwt_secret=SecretStr(SECRET),
        **overrides,
    )


@dataclass
class CartRig:
    runtime: ServiceRuntime
    http: httpx.AsyncClient

    @staticmethod
    def as_user(user_id: str = "alice", *, operator: bool = False) -> dict[str, str]:
        roles = ("operator",) if operator else ()
        return {"Authorization": f"Bearer {issue_token(SECRET, user_id, roles=roles)}"}

    async def new_cart(self, user_id: str = "alice", **lines: int) -> str:
        """A cart of `user_id` holding `item_id=quantity` lines (dashes written as `_`)."""
        response = await self.http.post("/carts", headers=self.as_user(user_id))
        assert response.status_code == 201, response.text
        cart_id: str = response.json()["cart_id"]
        for item, quantity in lines.items():
            put = await self.http.put(
                f"/carts/{cart_id}/lines/{item.replace('_', '-')}",
                json={"quantity": quantity},
                headers=self.as_user(user_id),
            )
            assert put.status_code == 200, put.text
        return cart_id

    async def checkout(
        self, cart_id: str, key: str, user_id: str = "alice", body: Any = None
    ) -> httpx.Response:
        headers = {**self.as_user(user_id), "Idempotency-Key": key}
        return await self.http.post(f"/carts/{cart_id}/checkout", json=body, headers=headers)

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

    async def emitted(self, message_type: str | None = None) -> list[Envelope]:
        async with self.runtime.sessionmaker() as session:
            rows = (await session.execute(select(outbox.c.body).order_by(outbox.c.seq))).all()
        envelopes = [Envelope.model_validate_json(body) for (body,) in rows]
        return [e for e in envelopes if message_type is None or e.type == message_type]

    async def deliver(self, message: Contract, *, correlation_id: str) -> Envelope:
        envelope = Envelope.wrap(message, correlation_id=correlation_id)
        await self.runtime.dispatcher(envelope)
        return envelope


async def stop(runtime: ServiceRuntime, bus: MemoryBus) -> None:
    await runtime.stop()
    await bus.close()


# The fixture factory's type, for tests that build carts with their own settings.
MakeCart = Callable[..., Awaitable[CartRig]]
