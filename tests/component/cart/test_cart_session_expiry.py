"""Sessions expire after CART_SESSION_TTL_SECONDS, can be recovered while their cart is unchanged,
and a background task marks and then deletes them (a 1-second TTL keeps these tests short)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from services.cart.checkout_sessions.service import Cleanup, clean_up
from services.cart.models import CheckoutSession, utcnow
from shared.messages.contracts import CheckoutRequested
from tests.support.cart import CartRig, MakeCart
from tests.support.waiting import eventually

TTL = 1
# Cleanup runs only when a test asks for it, except in the one test of the background task.
NO_BACKGROUND_CLEANUP = {"session_ttl_seconds": TTL, "session_cleanup_interval_seconds": 3600}


async def expired_session(cart: CartRig, **lines: int) -> tuple[str, str]:
    cart_id = await cart.new_cart("alice", **lines)
    session_id = (await cart.open_session(cart_id)).json()["session_id"]
    await asyncio.sleep(TTL + 0.05)
    return cart_id, session_id


async def stored_status(cart: CartRig, session_id: str) -> str | None:
    async with cart.runtime.sessionmaker() as session:
        row = await session.get(CheckoutSession, session_id)
        return row.status if row is not None else None


async def test_an_expired_session_says_so_and_cannot_be_checked_out(make_cart: MakeCart) -> None:
    cart = await make_cart(**NO_BACKGROUND_CLEANUP)
    cart_id, session_id = await expired_session(cart, pkg_10=1)

    validated = (await cart.session(session_id)).json()
    refused = await cart.checkout(cart_id, "late", body={"session_id": session_id})

    assert (validated["status"], validated["valid"], validated["code"]) == (
        "expired",
        False,
        "session_expired",
    )
    assert validated["cart_matches"] is True
    assert (refused.status_code, refused.json()["code"]) == (409, "session_expired")
    assert await cart.emitted(CheckoutRequested.TYPE) == []


async def test_an_expired_session_of_an_unchanged_cart_is_recovered(make_cart: MakeCart) -> None:
    cart = await make_cart(**NO_BACKGROUND_CLEANUP)
    cart_id, old_id = await expired_session(cart, pkg_10=1, vps_small=2)

    recovered = await cart.recover(old_id)
    again = await cart.recover(old_id)

    assert recovered.status_code == 201, recovered.text
    new = recovered.json()
    assert (new["status"], new["valid"]) == ("active", True)
    assert new["session_id"] != old_id
    assert (again.status_code, again.json()["session_id"]) == (200, new["session_id"])
    old = (await cart.session(old_id)).json()
    assert (old["status"], old["replaced_by"]) == ("expired", new["session_id"])

    accepted = await cart.checkout(cart_id, "recovered", body={"session_id": new["session_id"]})
    assert accepted.status_code == 202, accepted.text
    (envelope,) = await cart.emitted(CheckoutRequested.TYPE)
    assert envelope.payload["lines"] == new["lines"]


async def test_recovery_is_refused_with_a_code(make_cart: MakeCart) -> None:
    cart = await make_cart(**NO_BACKGROUND_CLEANUP)
    changed_cart, changed = await expired_session(cart, pkg_10=1)
    await cart.put_line(changed_cart, "pkg-10", 3)
    live_cart = await cart.new_cart(pkg_10=1)
    live = (await cart.open_session(live_cart)).json()["session_id"]
    used = (await cart.checkout(live_cart, "used")).json()["session_id"]
    _, withdrawn = await expired_session(cart, setup_job=1)
    await cart.http.delete("/catalogue/items/setup-job", headers=cart.as_user("o", operator=True))
    other_cart = await cart.new_cart(vps_small=1)
    active = (await cart.open_session(other_cart)).json()["session_id"]

    assert used == live
    for session_id, code in (
        (changed, "cart_changed"),
        (used, "session_not_active"),
        (withdrawn, "item_unavailable"),
        (active, "session_not_expired"),
    ):
        response = await cart.recover(session_id)
        assert (response.status_code, response.json()["code"]) == (409, code), session_id


async def test_changing_the_cart_after_expiry_marks_the_session_expired(
    make_cart: MakeCart,
) -> None:
    cart = await make_cart(**NO_BACKGROUND_CLEANUP)
    cart_id, session_id = await expired_session(cart, pkg_10=1)

    changed = await cart.put_line(cart_id, "vps-small", 1)

    assert changed.json()["session_id"] is None  # nobody is in checkout any more
    assert await stored_status(cart, session_id) == "expired"
    assert (await cart.checkout(cart_id, "fresh")).status_code == 202


async def test_cleanup_marks_expired_sessions_and_deletes_old_ended_ones(
    make_cart: MakeCart,
) -> None:
    hour = 3600
    cart = await make_cart(session_retention_seconds=hour, **NO_BACKGROUND_CLEANUP)
    changed_cart = await cart.new_cart(pkg_10=1)
    invalidated = (await cart.open_session(changed_cart)).json()["session_id"]
    renewed = (await cart.put_line(changed_cart, "pkg-10", 2)).json()["session_id"]
    _, expiring = await expired_session(cart, vps_small=1)  # `renewed` expires meanwhile too
    completed_cart = await cart.new_cart(vps_small=1)
    completed = (await cart.checkout(completed_cart, "done")).json()["session_id"]
    live_cart = await cart.new_cart(setup_job=1)
    live = (await cart.open_session(live_cart)).json()["session_id"]
    now = utcnow()
    ids = (invalidated, renewed, expiring, completed, live)

    assert await clean_up(cart.runtime, now=now) == Cleanup(expired=2, deleted=0)
    assert [await stored_status(cart, s) for s in ids] == [
        "invalidated",
        "expired",
        "expired",
        "completed",
        "active",
    ]
    # Within the retention period ended sessions stay (an expired one can still be recovered)...
    at_retention_end = now + timedelta(seconds=hour - 10)
    assert await clean_up(cart.runtime, now=at_retention_end) == Cleanup(expired=1, deleted=0)
    # ...after it they are deleted; completed sessions and recently ended ones are kept.
    after = now + timedelta(seconds=hour + 10)
    assert await clean_up(cart.runtime, now=after) == Cleanup(expired=0, deleted=3)
    assert [await stored_status(cart, s) for s in ids] == [
        None,
        None,
        None,
        "completed",
        "expired",
    ]
    gone = await cart.session(expiring)
    assert (gone.status_code, gone.json()["code"]) == (404, "session_not_found")


async def test_the_background_task_expires_sessions_on_its_own(make_cart: MakeCart) -> None:
    cart = await make_cart(session_ttl_seconds=TTL, session_cleanup_interval_seconds=0.05)
    cart_id = await cart.new_cart(pkg_10=1)
    session_id = (await cart.open_session(cart_id)).json()["session_id"]

    async def marked() -> bool:
        return await stored_status(cart, session_id) == "expired"

    await eventually(marked, within=TTL + 2)
    async with cart.runtime.sessionmaker() as session:
        row = (await session.scalars(select(CheckoutSession))).one()
    assert row.updated_at >= row.expires_at
