"""Checkout sessions on real PostgreSQL: the revision that adds them applies over a deployed
database, its constraints exist, and sessions are issued, renewed, checked out once, expired,
recovered and cleaned up — with PostgreSQL's row locks deciding the races."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

from services.cart.bootstrap import MIGRATIONS, build
from services.cart.checkout_sessions.service import Cleanup, clean_up
from services.cart.models import CheckoutSession, utcnow
from shared.db import make_engine
from shared.migrations import upgrade_to_head
from tests.support.cart import CartRig, MakeCart, cart_settings
from tests.support.migrations import migrated_to
from tests.support.rig import Rigs

FreshDatabase = Callable[[str], Awaitable[str]]
BEFORE_SESSIONS = "0aa48c8246e0"


@pytest_asyncio.fixture(loop_scope="session")
async def make_pg_cart(fresh_database: FreshDatabase) -> AsyncIterator[MakeCart]:
    """Factory: a cart service with these settings on a fresh PostgreSQL database."""
    async with Rigs() as rigs:

        async def make(**overrides: Any) -> CartRig:
            url = await fresh_database(f"cart_sessions_{len(rigs)}")
            settings = cart_settings(
                url,
                db_pool_size=4,
                **{"session_cleanup_interval_seconds": 3600, **overrides},
            )
            return await rigs.start(CartRig, build, settings)

        yield make


# --- the migration ---------------------------------------------------------------------------


async def test_the_sessions_revision_applies_over_a_deployed_database(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database("cart_sessions_migration")
    await migrated_to(url, MIGRATIONS, BEFORE_SESSIONS)
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO catalogue_items (id, kind, name, unit_price, currency,"
                    " credit_price, units_per_item, active, created_at, updated_at) VALUES"
                    " ('pkg-10', 'session_package', '10 sessions', 5000, 'EUR', 400, 10, true,"
                    " now(), now())"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO carts (id, user_id, status, currency, version, created_at,"
                    " updated_at) VALUES ('c-old', 'alice', 'open', 'EUR', 1, now(), now())"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO cart_lines (cart_id, item_id, quantity) VALUES ('c-old', 'pkg-10', 2)"
                )
            )

        await upgrade_to_head(engine, MIGRATIONS)

        async with engine.connect() as conn:
            lines = (
                await conn.execute(text("SELECT cart_id, item_id, quantity FROM cart_lines"))
            ).all()
            item = (
                await conn.execute(
                    text("SELECT available_from, available_until FROM catalogue_items")
                )
            ).one()
            constraints = set(
                (
                    await conn.scalars(
                        text(
                            "SELECT conname FROM pg_constraint WHERE conrelid IN"
                            " ('catalogue_items'::regclass, 'checkout_sessions'::regclass)"
                            " AND contype = 'c'"
                        )
                    )
                ).all()
            )
            partial = await conn.scalar(
                text(
                    "SELECT indexdef FROM pg_indexes"
                    " WHERE indexname = 'uq_checkout_sessions_one_active_per_cart'"
                )
            )
        assert lines == [("c-old", "pkg-10", 2)]
        assert tuple(item) == (None, None)
        assert {
            "ck_catalogue_items_availability_window",
            "ck_checkout_sessions_status",
            "ck_checkout_sessions_checkout_iff_completed",
            "ck_checkout_sessions_expires_after_creation",
            "ck_checkout_sessions_content_hash_sha256",
        } <= constraints
        assert partial is not None and "UNIQUE" in partial and "'active'" in partial

        with pytest.raises(IntegrityError, match="ck_catalogue_items_availability_window"):
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "UPDATE catalogue_items SET available_from = now(),"
                        " available_until = now() - interval '1 hour'"
                    )
                )
    finally:
        await engine.dispose()


async def test_a_cart_behind_the_sessions_revision_refuses_to_start(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database("cart_sessions_behind")
    await migrated_to(url, MIGRATIONS, BEFORE_SESSIONS)

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cart"],
        env={**os.environ, "CART_DATABASE_URL": url, "CART_HTTP_PORT": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "cart refuses to start" in result.stderr
    assert f"database schema is at ['{BEFORE_SESSIONS}']" in result.stderr


# --- the service -----------------------------------------------------------------------------


async def test_sessions_price_several_kinds_and_refuse_client_prices(
    make_pg_cart: MakeCart,
) -> None:
    cart = await make_pg_cart()
    cart_id = await cart.new_cart(pkg_10=2, vps_small=1, credits_100=1, setup_job=1)

    tampered = await cart.open_session(cart_id, body={"use_credits": True, "credits_total": 0})
    opened = await cart.open_session(cart_id)

    assert (tampered.status_code, tampered.json()["code"]) == (422, "validation_error")
    assert opened.status_code == 201
    assert opened.json()["totals"] == {
        "item_count": 5,
        "units_total": 20 + 1 + 100 + 1,
        "money_total": 1000,
        "credits_total": 2 * 400 + 120 + 250,
        "currency": "EUR",
    }


async def test_renew_on_change_then_the_new_session_checks_out_once(
    make_pg_cart: MakeCart,
) -> None:
    cart = await make_pg_cart()
    cart_id = await cart.new_cart(pkg_10=1)
    old_id = (await cart.open_session(cart_id)).json()["session_id"]

    new_id = (await cart.put_line(cart_id, "vps-small", 1)).json()["session_id"]
    old = (await cart.session(old_id)).json()
    with_old = await cart.checkout(cart_id, "old", body={"session_id": old_id})
    responses = await asyncio.gather(
        *(cart.checkout(cart_id, f"tab-{n}", body={"session_id": new_id}) for n in range(4))
    )

    assert new_id not in (None, old_id)
    assert (old["status"], old["code"], old["replaced_by"]) == (
        "invalidated",
        "session_invalidated",
        new_id,
    )
    assert (with_old.status_code, with_old.json()["code"]) == (409, "session_invalidated")
    assert sorted(r.status_code for r in responses) == [202, 409, 409, 409]
    (envelope,) = await cart.requested_for(cart_id)
    assert [line["item_id"] for line in envelope.payload["lines"]] == ["pkg-10", "vps-small"]
    assert (await cart.session(new_id)).json()["status"] == "completed"


async def test_checkout_without_a_session_id_stores_the_session_it_issues_completed(
    make_pg_cart: MakeCart,
) -> None:
    # The session issued for the checkout is stored completed at once, after its checkout row;
    # the cart's stale active session is retired by one conditional update first.
    cart = await make_pg_cart()
    none_yet = await cart.new_cart(pkg_10=1)
    other_choice = await cart.new_cart(pkg_10=1)
    timed_out = await cart.new_cart(pkg_10=1)
    money_only = await cart.open_session(other_choice, body={"use_credits": False})
    expired = await cart.open_session(timed_out)
    an_hour_ago = utcnow() - timedelta(hours=1)
    async with cart.runtime.transaction() as session:
        await session.execute(
            update(CheckoutSession)
            .where(CheckoutSession.id == expired.json()["session_id"])
            .values(created_at=an_hour_ago - timedelta(hours=1), expires_at=an_hour_ago)
        )

    carts = (none_yet, other_choice, timed_out)
    responses = await asyncio.gather(
        *(cart.checkout(cart_id, f"{cart_id}-{n}") for cart_id in carts for n in range(3))
    )

    assert sorted(r.status_code for r in responses) == [202] * 3 + [409] * 6
    accepted = {r.json()["session_id"]: r.json()["checkout_id"] for r in responses if r.is_success}
    async with cart.runtime.sessionmaker() as session:
        rows = (
            await session.execute(
                select(
                    CheckoutSession.cart_id,
                    CheckoutSession.id,
                    CheckoutSession.status,
                    CheckoutSession.replaced_by,
                    CheckoutSession.checkout_id,
                ).order_by(CheckoutSession.created_at)
            )
        ).all()
    by_cart = {cart_id: [r for r in rows if r.cart_id == cart_id] for cart_id in carts}
    (issued,) = by_cart[none_yet]
    invalidated, renewed = by_cart[other_choice]
    timed_out_row, after_expiry = by_cart[timed_out]
    for row in (issued, renewed, after_expiry):
        assert (row.status, row.checkout_id) == ("completed", accepted[row.id])
    assert (invalidated.id, invalidated.status, invalidated.replaced_by) == (
        money_only.json()["session_id"],
        "invalidated",
        renewed.id,
    )
    assert (timed_out_row.id, timed_out_row.status, timed_out_row.replaced_by) == (
        expired.json()["session_id"],
        "expired",
        None,
    )


async def test_concurrent_session_requests_share_one_active_session(
    make_pg_cart: MakeCart,
) -> None:
    cart = await make_pg_cart()
    cart_id = await cart.new_cart(pkg_10=1)

    responses = await asyncio.gather(*(cart.open_session(cart_id) for _ in range(6)))

    assert sorted(r.status_code for r in responses) == [200] * 5 + [201]
    assert len({r.json()["session_id"] for r in responses}) == 1
    async with cart.runtime.sessionmaker() as session:
        rows = await session.scalar(
            select(func.count())
            .select_from(CheckoutSession)
            .where(CheckoutSession.cart_id == cart_id)
        )
    assert rows == 1


async def test_expiry_recovery_and_cleanup(make_pg_cart: MakeCart) -> None:
    cart = await make_pg_cart(session_ttl_seconds=1, session_retention_seconds=3600)
    cart_id = await cart.new_cart(pkg_10=1, setup_job=1)
    old_id = (await cart.open_session(cart_id)).json()["session_id"]
    await asyncio.sleep(1.05)

    expired = (await cart.session(old_id)).json()
    refused = await cart.checkout(cart_id, "late", body={"session_id": old_id})
    recovered = await cart.recover(old_id)
    new_id = recovered.json()["session_id"]
    accepted = await cart.checkout(cart_id, "recovered", body={"session_id": new_id})

    assert (expired["status"], expired["code"], expired["cart_matches"]) == (
        "expired",
        "session_expired",
        True,
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "session_expired")
    assert recovered.status_code == 201 and new_id != old_id
    assert accepted.status_code == 202, accepted.text

    now = utcnow()
    assert await clean_up(cart.runtime, now=now) == Cleanup(expired=0, deleted=0)
    assert await clean_up(cart.runtime, now=now + timedelta(hours=2)) == Cleanup(0, deleted=1)
    assert (await cart.session(old_id)).json()["code"] == "session_not_found"
    assert (await cart.session(new_id)).json()["status"] == "completed"


async def test_an_item_withdrawn_after_the_session_is_refused_at_checkout(
    make_pg_cart: MakeCart,
) -> None:
    cart = await make_pg_cart()
    cart_id = await cart.new_cart(pkg_10=1, vps_small=1)
    session_id = (await cart.open_session(cart_id)).json()["session_id"]
    await cart.http.delete(
        "/catalogue/items/vps-small", headers=cart.as_user("olga", operator=True)
    )

    response = await cart.checkout(cart_id, "withdrawn", body={"session_id": session_id})

    assert (response.status_code, response.json()["code"]) == (422, "item_unavailable")
    assert await cart.requested_for(cart_id) == []


async def test_another_users_cart_and_session_are_not_found(make_pg_cart: MakeCart) -> None:
    cart = await make_pg_cart()
    cart_id = await cart.new_cart(pkg_10=1)
    session_id = (await cart.open_session(cart_id)).json()["session_id"]

    assert (await cart.session(session_id, "bob")).status_code == 404
    assert (await cart.open_session(cart_id, "bob")).status_code == 404
    response = await cart.checkout(cart_id, "bob", "bob", body={"session_id": session_id})
    assert (response.status_code, response.json()["code"]) == (404, "cart_not_found")
    assert (await cart.session(session_id)).json()["status"] == "active"
