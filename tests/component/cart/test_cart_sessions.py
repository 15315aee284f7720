"""Checkout sessions over HTTP on SQLite: issued once per cart content, renewed when the cart
changes, checked out once, and refused with a code when they no longer stand for the cart."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.cart.checkout_sessions import store
from services.cart.models import CheckoutSession, utcnow
from shared.messages.contracts import CheckoutRequested, OrderCancelled
from tests.support.cart import CartRig

ALICE = CartRig.as_user("alice")
REQUESTED = CheckoutRequested.TYPE


async def session_rows(cart: CartRig, cart_id: str) -> list[tuple[str, str, str | None]]:
    async with cart.runtime.sessionmaker() as session:
        rows = await session.execute(
            select(CheckoutSession.id, CheckoutSession.status, CheckoutSession.replaced_by)
            .where(CheckoutSession.cart_id == cart_id)
            .order_by(CheckoutSession.created_at)
        )
        return [(r.id, r.status, r.replaced_by) for r in rows]


async def test_a_session_snapshots_the_cart_priced_by_the_server(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=2, vps_small=1, credits_100=1, setup_job=3)

    response = await cart.open_session(cart_id)

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["valid"], body["code"], body["cart_matches"]) == (
        "active",
        True,
        None,
        True,
    )
    assert body["use_credits"] is True and body["checkout_id"] is None
    assert body["totals"] == {
        "item_count": 7,
        "units_total": 2 * 10 + 1 + 100 + 3,
        "money_total": 1000,
        "credits_total": 2 * 400 + 120 + 3 * 250,
        "currency": "EUR",
    }
    assert [(x["item_id"], x["kind"], x["quantity"], x["paid_with"]) for x in body["lines"]] == [
        ("pkg-10", "session_package", 2, "credits"),
        ("vps-small", "server_plan", 1, "credits"),
        ("credits-100", "credit_pack", 1, "money"),
        ("setup-job", "service_job", 3, "credits"),
    ]
    view = (await cart.http.get(f"/carts/{cart_id}", headers=ALICE)).json()
    assert view["session_id"] == body["session_id"]


async def test_asking_again_returns_the_same_session_until_the_choice_changes(
    cart: CartRig,
) -> None:
    cart_id = await cart.new_cart(pkg_10=1)

    first = await cart.open_session(cart_id)
    again = await cart.open_session(cart_id, body={"use_credits": True})
    money = await cart.open_session(cart_id, body={"use_credits": False})

    assert (first.status_code, again.status_code, money.status_code) == (201, 200, 201)
    assert again.json()["session_id"] == first.json()["session_id"]
    assert money.json()["totals"]["money_total"] == 5000
    old = (await cart.session(first.json()["session_id"])).json()
    assert (old["status"], old["code"], old["replaced_by"]) == (
        "invalidated",
        "session_invalidated",
        money.json()["session_id"],
    )


async def test_a_client_cannot_price_a_session_or_a_checkout(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1)

    session = await cart.open_session(cart_id, body={"use_credits": True, "money_total": 1})
    checkout = await cart.checkout(cart_id, "cheap", body={"unit_price": 1})
    line = await cart.put_line(cart_id, "vps-small", 1, unit_price=1)

    for response in (session, checkout, line):
        assert (response.status_code, response.json()["code"]) == (422, "validation_error")
    assert await session_rows(cart, cart_id) == []
    assert await cart.emitted(REQUESTED) == []


async def test_changing_the_cart_invalidates_the_session_and_issues_a_new_one(
    cart: CartRig,
) -> None:
    cart_id = await cart.new_cart(pkg_10=1)
    old_id = (await cart.open_session(cart_id, body={"use_credits": False})).json()["session_id"]

    changed = await cart.put_line(cart_id, "vps-small", 2)

    new_id = changed.json()["session_id"]
    assert changed.status_code == 200 and new_id not in (None, old_id)
    assert changed.json()["totals"]["money_total"] == 5000 + 2 * 1500  # the session's choice
    old = (await cart.session(old_id)).json()
    assert (old["status"], old["valid"], old["code"], old["cart_matches"], old["replaced_by"]) == (
        "invalidated",
        False,
        "session_invalidated",
        False,
        new_id,
    )
    new = (await cart.session(new_id)).json()
    assert (new["status"], new["valid"], new["use_credits"]) == ("active", True, False)

    refused = await cart.checkout(cart_id, "with-old", body={"session_id": old_id})
    assert (refused.status_code, refused.json()["code"]) == (409, "session_invalidated")
    assert refused.json()["details"] == {"replaced_by": new_id}

    accepted = await cart.checkout(cart_id, "with-new", body={"session_id": new_id})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["session_id"] == new_id
    (envelope,) = await cart.emitted(REQUESTED)
    assert envelope.payload["lines"] == new["lines"]
    assert envelope.payload["money_total"] == new["totals"]["money_total"] == 8000
    assert await session_rows(cart, cart_id) == [
        (old_id, "invalidated", new_id),
        (new_id, "completed", None),
    ]


async def test_switching_a_package_is_one_change_with_one_new_session(cart: CartRig) -> None:
    await cart.put_item("pkg-20", unit_price=9000, credit_price=700, units_per_item=20)
    cart_id = await cart.new_cart(pkg_10=1, vps_small=1)
    old_id = (await cart.open_session(cart_id)).json()["session_id"]

    switched = await cart.put_line(cart_id, "pkg-20", 1, replaces="pkg-10")

    assert [x["item_id"] for x in switched.json()["lines"]] == ["vps-small", "pkg-20"]
    new_id = switched.json()["session_id"]
    assert [s[1] for s in await session_rows(cart, cart_id)] == ["invalidated", "active"]
    accepted = await cart.checkout(cart_id, "switched", body={"session_id": new_id})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["totals"]["credits_total"] == 700 + 120
    assert (await cart.session(old_id)).json()["replaced_by"] == new_id


async def test_a_change_that_changes_nothing_keeps_the_session(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=2)
    session_id = (await cart.open_session(cart_id)).json()["session_id"]

    same = await cart.put_line(cart_id, "pkg-10", 2)
    no_such_line = await cart.http.delete(f"/carts/{cart_id}/lines/vps-small", headers=ALICE)

    assert same.json()["session_id"] == no_such_line.json()["session_id"] == session_id
    assert await session_rows(cart, cart_id) == [(session_id, "active", None)]


async def test_emptying_the_cart_leaves_no_session_to_check_out(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1)
    session_id = (await cart.open_session(cart_id)).json()["session_id"]

    emptied = await cart.http.delete(f"/carts/{cart_id}/lines/pkg-10", headers=ALICE)

    assert emptied.json()["session_id"] is None
    assert await session_rows(cart, cart_id) == [(session_id, "invalidated", None)]
    refused = await cart.checkout(cart_id, "empty", body={"session_id": session_id})
    assert (refused.status_code, refused.json()["code"]) == (409, "session_invalidated")
    assert (await cart.checkout(cart_id, "empty-2")).json()["code"] == "cart_empty"


async def test_a_cart_without_a_session_gets_none_on_change(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1)

    changed = await cart.put_line(cart_id, "vps-small", 1)

    assert changed.json()["session_id"] is None
    assert await session_rows(cart, cart_id) == []


async def test_a_session_is_checked_out_once(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1)
    session_id = (await cart.open_session(cart_id)).json()["session_id"]
    body = {"session_id": session_id}

    first = await cart.checkout(cart_id, "once", body=body)
    retry = await cart.checkout(cart_id, "once", body=body)
    second = await cart.checkout(cart_id, "twice", body=body)

    assert first.status_code == retry.status_code == 202
    assert retry.json() == first.json()
    assert (second.status_code, second.json()["code"]) == (409, "session_not_active")
    assert len(await cart.emitted(REQUESTED)) == 1
    validated = (await cart.session(session_id)).json()
    assert (validated["status"], validated["code"], validated["checkout_id"]) == (
        "completed",
        "session_not_active",
        first.json()["checkout_id"],
    )

    # The order is rolled back: the cart reopens, the used session stays used.
    checkout_id = first.json()["checkout_id"]
    await cart.deliver(
        OrderCancelled(order_id=checkout_id, cart_id=cart_id, reason="payment expired"),
        correlation_id=checkout_id,
    )
    again = await cart.checkout(cart_id, "after-cancel", body=body)
    assert (again.status_code, again.json()["code"]) == (409, "session_not_active")
    fresh = await cart.checkout(cart_id, "after-cancel-fresh")
    assert fresh.status_code == 202 and fresh.json()["session_id"] != session_id


async def test_concurrent_checkouts_of_one_session_make_one_checkout(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1)
    body = {"session_id": (await cart.open_session(cart_id)).json()["session_id"]}

    responses = await asyncio.gather(
        *(cart.checkout(cart_id, f"t{n}", body=body) for n in range(4))
    )

    assert sorted(r.status_code for r in responses) == [202, 409, 409, 409]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"session_not_active"}
    assert len(await cart.emitted(REQUESTED)) == 1


async def test_checkout_without_a_session_id_uses_the_active_session(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1)
    session_id = (await cart.open_session(cart_id)).json()["session_id"]

    response = await cart.checkout(cart_id, "legacy")

    assert response.status_code == 202
    assert response.json()["session_id"] == session_id
    assert (await cart.session(session_id)).json()["status"] == "completed"


async def test_checkout_without_a_session_id_renews_a_session_for_another_choice(
    cart: CartRig,
) -> None:
    cart_id = await cart.new_cart(pkg_10=1)
    credits_session = (await cart.open_session(cart_id)).json()["session_id"]

    response = await cart.checkout(cart_id, "money", body={"use_credits": False})

    assert response.status_code == 202
    assert response.json()["totals"]["money_total"] == 5000
    assert response.json()["session_id"] != credits_session
    assert (await cart.session(credits_session)).json()["status"] == "invalidated"


async def test_a_session_and_a_different_payment_choice_conflict(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1)
    session_id = (await cart.open_session(cart_id)).json()["session_id"]

    response = await cart.checkout(
        cart_id, "mixed", body={"session_id": session_id, "use_credits": False}
    )

    assert (response.status_code, response.json()["code"]) == (422, "use_credits_conflict")
    assert (await cart.session(session_id)).json()["status"] == "active"


async def test_a_price_change_makes_the_session_stale_not_cheaper(cart: CartRig) -> None:
    cart_id = await cart.new_cart(vps_small=1)
    session_id = (await cart.open_session(cart_id)).json()["session_id"]
    await cart.put_item("vps-small", kind="server_plan", unit_price=1500, credit_price=150)

    validated = (await cart.session(session_id)).json()
    refused = await cart.checkout(cart_id, "stale", body={"session_id": session_id})
    renewed = await cart.checkout(cart_id, "renewed")

    assert (validated["status"], validated["code"], validated["cart_matches"]) == (
        "active",
        "cart_changed",
        False,
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "cart_changed")
    assert renewed.status_code == 202
    assert renewed.json()["totals"]["credits_total"] == 150


async def test_an_item_withdrawn_after_the_session_is_refused_at_checkout(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1, setup_job=1)
    session_id = (await cart.open_session(cart_id)).json()["session_id"]
    await cart.http.delete(
        "/catalogue/items/setup-job", headers=CartRig.as_user("o", operator=True)
    )

    validated = (await cart.session(session_id)).json()
    with_session = await cart.checkout(cart_id, "gone-1", body={"session_id": session_id})
    without = await cart.checkout(cart_id, "gone-2")

    assert (validated["valid"], validated["code"], validated["cart_matches"]) == (
        False,
        "item_unavailable",
        True,
    )
    for response in (with_session, without):
        assert (response.status_code, response.json()["code"]) == (422, "item_unavailable")
        assert response.json()["details"] == {"item_id": "setup-job"}
    assert await cart.emitted(REQUESTED) == []
    assert (await cart.session(session_id)).json()["status"] == "active"


async def test_another_users_cart_and_session_do_not_exist_for_you(cart: CartRig) -> None:
    alice_cart = await cart.new_cart("alice", pkg_10=1)
    bob_cart = await cart.new_cart("bob", pkg_10=1)
    session_id = (await cart.open_session(alice_cart)).json()["session_id"]

    open_on_alices = await cart.open_session(alice_cart, user_id="bob")
    read = await cart.session(session_id, user_id="bob")
    recover = await cart.recover(session_id, user_id="bob")
    on_alices_cart = await cart.checkout(alice_cart, "b1", "bob", body={"session_id": session_id})
    on_own_cart = await cart.checkout(bob_cart, "b2", "bob", body={"session_id": session_id})

    assert (open_on_alices.status_code, open_on_alices.json()["code"]) == (404, "cart_not_found")
    for response in (read, recover, on_own_cart):
        assert (response.status_code, response.json()["code"]) == (404, "session_not_found")
    assert (on_alices_cart.status_code, on_alices_cart.json()["code"]) == (404, "cart_not_found")
    assert (await cart.session(session_id)).json()["status"] == "active"
    assert await cart.emitted(REQUESTED) == []


async def test_concurrent_requests_share_one_active_session(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1)

    responses = await asyncio.gather(*(cart.open_session(cart_id) for _ in range(5)))

    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["session_id"] for r in responses}) == 1


async def test_a_cart_being_checked_out_issues_no_session(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1)
    await cart.checkout(cart_id, "k")

    response = await cart.open_session(cart_id)

    assert (response.status_code, response.json()["code"]) == (409, "cart_not_open")


async def test_the_database_keeps_one_active_session_per_cart(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1)
    first = (await cart.open_session(cart_id)).json()["session_id"]
    async with cart.runtime.sessionmaker() as session:
        row = await session.get(CheckoutSession, first)
        assert row is not None
        values = {c.key: getattr(row, c.key) for c in CheckoutSession.__table__.columns}

    for bad in (
        {**values, "id": "twin"},  # a second active session for the cart
        {**values, "id": "s2", "status": "completed"},  # completed without its checkout
        {**values, "id": "s3", "status": "paused"},
        {**values, "id": "s4", "status": "expired", "expires_at": values["created_at"]},
    ):
        with pytest.raises(IntegrityError):
            async with cart.runtime.transaction() as session:
                await session.execute(insert(CheckoutSession).values(**bad))
    with pytest.raises(IntegrityError):
        async with cart.runtime.transaction() as session:
            await session.execute(
                update(CheckoutSession)
                .where(CheckoutSession.id == first)
                .values(checkout_id="not-a-checkout", status="completed")
            )
    async with cart.runtime.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(CheckoutSession))
    assert count == 1


async def test_completing_a_session_is_a_conditional_update_that_succeeds_once(
    cart: CartRig,
) -> None:
    # Checkout validates first under the cart's lock; this is the database's own last word.
    cart_id = await cart.new_cart(pkg_10=1)
    session_id = (await cart.open_session(cart_id)).json()["session_id"]
    first = (await cart.checkout(cart_id, "one", body={"session_id": session_id})).json()
    expired_cart = await cart.new_cart(vps_small=1)
    expired_id = (await cart.open_session(expired_cart)).json()["session_id"]

    async with cart.runtime.transaction() as session:
        again = await store.complete_session(
            session, session_id=session_id, checkout_id=first["checkout_id"], now=utcnow()
        )
        late = await store.complete_session(
            session,
            session_id=expired_id,
            checkout_id=first["checkout_id"],
            now=utcnow() + timedelta(days=2),
        )

    assert (again, late) == (False, False)
    assert (await cart.session(expired_id)).json()["status"] == "active"
