"""The cart service on real PostgreSQL: its migrations, its constraints, and checkouts that row
locks keep to one per cart and one per idempotency key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from services.cart.bootstrap import build
from services.cart.models import CartLine, Checkout
from shared.messages.contracts import OrderCompleted
from tests.support.cart import CartRig, cart_settings
from tests.support.rig import Rigs


@pytest_asyncio.fixture(loop_scope="session")
async def pg_cart(fresh_database: Callable[[str], Awaitable[str]]) -> AsyncIterator[CartRig]:
    settings = cart_settings(await fresh_database("cart_service"), db_pool_size=4)
    async with Rigs() as rigs:
        yield await rigs.start(CartRig, build, settings)  # runs the Alembic migrations


async def test_checkout_on_postgres_end_to_end(pg_cart: CartRig) -> None:
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

    await pg_cart.deliver(
        OrderCompleted(order_id=checkout_id, cart_id=cart_id, status="completed"),
        correlation_id=checkout_id,
    )
    view = (await pg_cart.http.get(f"/carts/{cart_id}", headers=pg_cart.as_user())).json()
    status = (await pg_cart.http.get(f"/checkouts/{checkout_id}", headers=pg_cart.as_user())).json()
    assert (view["status"], status["status"]) == ("checked_out", "completed")


async def test_concurrent_checkouts_of_one_cart_make_one_checkout(pg_cart: CartRig) -> None:
    cart_id = await pg_cart.new_cart(setup_job=1)

    by_key = await asyncio.gather(*(pg_cart.checkout(cart_id, f"tab-{n}") for n in range(3)))

    assert sorted(r.status_code for r in by_key) == [202, 409, 409]
    assert len(await pg_cart.requested_for(cart_id)) == 1


async def test_concurrent_double_click_with_one_key_makes_one_checkout(pg_cart: CartRig) -> None:
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


async def test_postgres_refuses_orphan_lines_and_bad_quantities(pg_cart: CartRig) -> None:
    cart_id = await pg_cart.new_cart()

    for line in (
        {"cart_id": cart_id, "item_id": "no-such-item", "quantity": 1},
        {"cart_id": cart_id, "item_id": "pkg-10", "quantity": 100},
        {"cart_id": cart_id, "item_id": "pkg-10", "quantity": 0},
    ):
        with pytest.raises(IntegrityError):
            async with pg_cart.runtime.transaction() as session:
                await session.execute(insert(CartLine).values(**line))
