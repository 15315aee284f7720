"""The cart service on real PostgreSQL: its migrations, its constraints, and checkouts that row
locks keep to one per cart and one per idempotency key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from services.cart.bootstrap import build
from services.cart.models import CartLine, Checkout, outbox
from services.cart.settings import CartSettings
from shared.auth import issue_token
from shared.memory_bus import MemoryBus
from shared.messages import Envelope
from shared.messages.contracts import CheckoutRequested, OrderCompleted
from shared.runtime import ServiceRuntime

SECRET = "cart-pg-test-secret-long-enough-for-hs256"
ALICE = {"Authorization": f"Bearer {issue_token(SECRET, 'alice')}"}


@dataclass
class PgCart:
    runtime: ServiceRuntime
    http: httpx.AsyncClient

    async def new_cart(self, **lines: int) -> str:
        cart_id: str = (await self.http.post("/carts", headers=ALICE)).json()["cart_id"]
        for item, quantity in lines.items():
            response = await self.http.put(
                f"/carts/{cart_id}/lines/{item.replace('_', '-')}",
                json={"quantity": quantity},
                headers=ALICE,
            )
            assert response.status_code == 200, response.text
        return cart_id

    async def checkout(self, cart_id: str, key: str) -> httpx.Response:
        headers = {**ALICE, "Idempotency-Key": key}
        return await self.http.post(f"/carts/{cart_id}/checkout", headers=headers)

    async def requested_for(self, cart_id: str) -> list[Envelope]:
        async with self.runtime.sessionmaker() as session:
            bodies = (await session.scalars(select(outbox.c.body).order_by(outbox.c.seq))).all()
        envelopes = [Envelope.model_validate_json(body) for body in bodies]
        return [
            e
            for e in envelopes
            if e.type == CheckoutRequested.TYPE and e.payload["cart_id"] == cart_id
        ]


@pytest_asyncio.fixture(loop_scope="session")
async def pg_cart(fresh_database: Callable[[str], Awaitable[str]]) -> AsyncIterator[PgCart]:
    url = await fresh_database("cart_service")
    settings = CartSettings(
        database_url=url, broker_url="memory://", jwt_secret=SecretStr(SECRET), db_pool_size=4
    )
    bus = MemoryBus()
    runtime = build(settings, bus=bus, auto_migrate=True)  # runs the Alembic migrations
    await runtime.start()
    transport = httpx.ASGITransport(app=runtime.app(manage_lifecycle=False))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://cart") as http:
            yield PgCart(runtime, http)
    finally:
        await asyncio.sleep(0.05)  # see tests/unit/cart/cart_rig.py: stop()
        await runtime.stop()
        await bus.close()


async def test_checkout_on_postgres_end_to_end(pg_cart: PgCart) -> None:
    ready = await pg_cart.http.get("/ready")
    assert ready.json()["database"] == "ok"
    cart_id = await pg_cart.new_cart(pkg_10=2, credits_100=1, vps_small=1)

    response = await pg_cart.checkout(cart_id, "pg-click")
    replay = await pg_cart.checkout(cart_id, "pg-click")

    assert response.status_code == replay.status_code == 202
    checkout_id = response.json()["checkout_id"]
    assert replay.json()["checkout_id"] == checkout_id
    assert response.json()["totals"] == {
        "item_count": 4,
        "units_total": 2 * 10 + 100 + 1,
        "money_total": 1000,
        "credits_total": 2 * 400 + 120,
        "currency": "EUR",
    }
    (envelope,) = await pg_cart.requested_for(cart_id)
    assert envelope.correlation_id == checkout_id
    assert [line["item_id"] for line in envelope.payload["lines"]] == [
        "pkg-10",
        "credits-100",
        "vps-small",
    ]

    await pg_cart.runtime.dispatcher(
        Envelope.wrap(
            OrderCompleted(order_id=checkout_id, cart_id=cart_id, status="completed"),
            correlation_id=checkout_id,
        )
    )
    view = (await pg_cart.http.get(f"/carts/{cart_id}", headers=ALICE)).json()
    status = (await pg_cart.http.get(f"/checkouts/{checkout_id}", headers=ALICE)).json()
    assert (view["status"], status["status"]) == ("checked_out", "completed")


async def test_concurrent_checkouts_of_one_cart_make_one_checkout(pg_cart: PgCart) -> None:
    cart_id = await pg_cart.new_cart(setup_job=1)

    by_key = await asyncio.gather(*(pg_cart.checkout(cart_id, f"tab-{n}") for n in range(3)))

    assert sorted(r.status_code for r in by_key) == [202, 409, 409]
    assert len(await pg_cart.requested_for(cart_id)) == 1


async def test_concurrent_double_click_with_one_key_makes_one_checkout(pg_cart: PgCart) -> None:
    cart_id = await pg_cart.new_cart(pkg_10=1)

    responses = await asyncio.gather(*(pg_cart.checkout(cart_id, "same-key") for _ in range(4)))

    assert [r.status_code for r in responses] == [202] * 4
    assert len({r.json()["checkout_id"] for r in responses}) == 1
    async with pg_cart.runtime.sessionmaker() as session:
        rows = await session.scalar(
            select(func.count()).select_from(Checkout).where(Checkout.cart_id == cart_id)
        )
    assert rows == 1
    assert len(await pg_cart.requested_for(cart_id)) == 1


async def test_postgres_refuses_orphan_lines_and_bad_quantities(pg_cart: PgCart) -> None:
    cart_id = await pg_cart.new_cart()

    for line in (
        {"cart_id": cart_id, "item_id": "no-such-item", "quantity": 1},
        {"cart_id": cart_id, "item_id": "pkg-10", "quantity": 100},
        {"cart_id": cart_id, "item_id": "pkg-10", "quantity": 0},
    ):
        with pytest.raises(IntegrityError):
            async with pg_cart.runtime.transaction() as session:
                await session.execute(insert(CartLine).values(**line))
