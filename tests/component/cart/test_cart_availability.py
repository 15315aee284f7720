"""Catalogue availability: an item is on sale while `active` and inside its optional
[available_from, available_until) window — checked when it is added and again at checkout."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from services.cart.models import CatalogueItem, utcnow
from shared.messages.contracts import CheckoutRequested
from tests.support.cart import CartRig

ALICE = CartRig.as_user("alice")
HOUR = timedelta(hours=1)


def at(offset: timedelta) -> str:
    return (utcnow() + offset).isoformat()


async def on_sale(cart: CartRig) -> set[str]:
    return {i["id"] for i in (await cart.http.get("/catalogue")).json()["items"]}


async def test_only_items_inside_their_window_are_listed_and_can_be_added(cart: CartRig) -> None:
    soon = await cart.put_item("pkg-soon", unit_price=100, available_from=at(HOUR))
    past = await cart.put_item("pkg-past", unit_price=100, available_until=at(-HOUR))
    now = await cart.put_item(
        "pkg-now", unit_price=100, available_from=at(-HOUR), available_until=at(HOUR)
    )
    cart_id = await cart.new_cart()

    assert (soon.json()["available"], past.json()["available"], now.json()["available"]) == (
        False,
        False,
        True,
    )
    assert soon.json()["available_from"] is not None
    listed = await on_sale(cart)
    assert "pkg-now" in listed and not {"pkg-soon", "pkg-past"} & listed
    for item_id in ("pkg-soon", "pkg-past"):
        refused = await cart.put_line(cart_id, item_id, 1)
        assert (refused.status_code, refused.json()["code"]) == (422, "item_unavailable")
    assert (await cart.put_line(cart_id, "pkg-now", 1)).status_code == 200


async def test_a_window_must_be_a_real_interval_with_offsets(cart: CartRig) -> None:
    moment = at(HOUR)
    empty = await cart.put_item(
        "pkg-x", unit_price=1, available_from=moment, available_until=moment
    )
    backwards = await cart.put_item(
        "pkg-x", unit_price=1, available_from=at(HOUR), available_until=at(-HOUR)
    )
    naive = await cart.put_item("pkg-x", unit_price=1, available_from="2026-01-01T00:00:00")

    for response in (empty, backwards, naive):
        assert (response.status_code, response.json()["code"]) == (422, "validation_error")


async def test_the_database_refuses_an_empty_window(cart: CartRig) -> None:
    start = utcnow()
    with pytest.raises(IntegrityError):
        async with cart.runtime.transaction() as session:
            await session.execute(
                update(CatalogueItem)
                .where(CatalogueItem.id == "pkg-10")
                .values(available_from=start, available_until=start - HOUR)
            )


async def test_an_item_whose_sale_ended_after_it_was_added_stops_the_checkout(
    cart: CartRig,
) -> None:
    await cart.put_item("pkg-promo", unit_price=2000, credit_price=100, available_until=at(HOUR))
    cart_id = await cart.new_cart(pkg_10=1, pkg_promo=1)
    session_id = (await cart.open_session(cart_id)).json()["session_id"]

    # The promotion is cut short by the operator.
    await cart.put_item("pkg-promo", unit_price=2000, credit_price=100, available_until=at(-HOUR))
    view = (await cart.http.get(f"/carts/{cart_id}", headers=ALICE)).json()
    checkout = await cart.checkout(cart_id, "promo", body={"session_id": session_id})

    promo = next(line for line in view["lines"] if line["item_id"] == "pkg-promo")
    assert promo["available"] is False
    assert (checkout.status_code, checkout.json()["code"]) == (422, "item_unavailable")
    assert checkout.json()["details"] == {"item_id": "pkg-promo"}
    assert await cart.emitted(CheckoutRequested.TYPE) == []

    # Removing the line renews the session for what can still be bought.
    removed = await cart.http.delete(f"/carts/{cart_id}/lines/pkg-promo", headers=ALICE)
    renewed = removed.json()["session_id"]
    assert renewed not in (None, session_id)
    assert (
        await cart.checkout(cart_id, "promo-2", body={"session_id": renewed})
    ).status_code == 202
