"""Checking a cart out: one CheckoutRequested per cart and per idempotency key, however often
or concurrently the shopper clicks."""

from __future__ import annotations

import asyncio

from shared.messages.contracts import CheckoutRequested
from tests.support.cart import CartRig

ALICE = CartRig.as_user("alice")
REQUESTED = CheckoutRequested.TYPE


async def test_checkout_emits_one_checkout_requested_with_the_priced_lines(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=2, credits_100=1)

    response = await cart.checkout(cart_id, "click-1")

    assert response.status_code == 202, response.text
    body = response.json()
    checkout_id = body["checkout_id"]
    assert body == {
        "checkout_id": checkout_id,
        "order_id": checkout_id,
        "session_id": body["session_id"],
        "status": "requested",
        "totals": {
            "item_count": 3,
            "units_total": 120,
            "money_total": 1000,
            "credits_total": 800,
            "currency": "EUR",
        },
        "order_url": f"/api/orders/orders/{checkout_id}",
    }
    assert response.headers["X-Trace-Id"] == checkout_id

    (envelope,) = await cart.emitted(REQUESTED)
    assert envelope.correlation_id == checkout_id
    message = CheckoutRequested.model_validate(envelope.payload)
    assert (message.checkout_id, message.cart_id, message.user_id) == (
        checkout_id,
        cart_id,
        "alice",
    )
    assert (message.currency, message.money_total, message.credits_total) == ("EUR", 1000, 800)
    assert [(x.line_no, x.item_id, x.quantity, x.paid_with) for x in message.lines] == [
        (1, "pkg-10", 2, "credits"),
        (2, "credits-100", 1, "money"),
    ]
    pkg = message.lines[0]
    assert (pkg.unit_price, pkg.unit_credits, pkg.units_per_item) == (5000, 400, 10)

    view = (await cart.http.get(f"/carts/{cart_id}", headers=ALICE)).json()
    assert view["status"] == "checking_out"
    status = (await cart.http.get(f"/checkouts/{checkout_id}", headers=ALICE)).json()
    assert (status["status"], status["cart_id"]) == ("requested", cart_id)


async def test_paying_without_credits_puts_every_line_on_money(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1, vps_small=2)

    response = await cart.checkout(cart_id, "money-please", body={"use_credits": False})

    assert response.json()["totals"]["money_total"] == 5000 + 2 * 1500
    (envelope,) = await cart.emitted(REQUESTED)
    assert {line["paid_with"] for line in envelope.payload["lines"]} == {"money"}
    assert envelope.payload["credits_total"] == 0


async def test_a_retry_with_the_same_key_gets_the_same_checkout(cart: CartRig) -> None:
    cart_id = await cart.new_cart(vps_small=1)

    first = await cart.checkout(cart_id, "retry-me", body={"use_credits": True})
    again = await cart.checkout(cart_id, "retry-me", body={"use_credits": True})
    default_body = await cart.checkout(cart_id, "retry-me")  # the default is use_credits=true

    assert first.status_code == again.status_code == default_body.status_code == 202
    assert again.json() == first.json() == default_body.json()
    assert again.headers["X-Trace-Id"] == first.json()["checkout_id"]
    assert len(await cart.emitted(REQUESTED)) == 1


async def test_the_same_key_for_a_different_request_is_refused(cart: CartRig) -> None:
    cart_id = await cart.new_cart(vps_small=1)
    other_cart = await cart.new_cart(pkg_10=1)
    await cart.checkout(cart_id, "one-key")

    other_body = await cart.checkout(cart_id, "one-key", body={"use_credits": False})
    other_target = await cart.checkout(other_cart, "one-key")

    for response in (other_body, other_target):
        assert response.status_code == 422
        assert response.json()["code"] == "idempotency_key_reused"
    assert len(await cart.emitted(REQUESTED)) == 1


async def test_keys_are_per_user(cart: CartRig) -> None:
    alice_cart = await cart.new_cart("alice", vps_small=1)
    bob_cart = await cart.new_cart("bob", vps_small=1)

    alice = await cart.checkout(alice_cart, "shared-key", user_id="alice")
    bob = await cart.checkout(bob_cart, "shared-key", user_id="bob")

    assert alice.status_code == bob.status_code == 202
    assert alice.json()["checkout_id"] != bob.json()["checkout_id"]
    assert len(await cart.emitted(REQUESTED)) == 2


async def test_a_cart_being_checked_out_cannot_be_checked_out_or_changed_again(
    cart: CartRig,
) -> None:
    cart_id = await cart.new_cart(pkg_10=1)
    await cart.checkout(cart_id, "first-click")

    second = await cart.checkout(cart_id, "second-click")
    add = await cart.http.put(
        f"/carts/{cart_id}/lines/vps-small", json={"quantity": 1}, headers=ALICE
    )
    remove = await cart.http.delete(f"/carts/{cart_id}/lines/pkg-10", headers=ALICE)

    for response in (second, add, remove):
        assert (response.status_code, response.json()["code"]) == (409, "cart_not_open")
    assert len(await cart.emitted(REQUESTED)) == 1


async def test_checkout_needs_an_idempotency_key_and_a_non_empty_cart(cart: CartRig) -> None:
    cart_id = await cart.new_cart()

    no_key = await cart.http.post(f"/carts/{cart_id}/checkout", headers=ALICE)
    empty = await cart.checkout(cart_id, "empty-cart")
    extra = await cart.checkout(cart_id, "extra", body={"use_credits": True, "discount": 100})

    assert (no_key.status_code, no_key.json()["code"]) == (400, "idempotency_key_required")
    assert (empty.status_code, empty.json()["code"]) == (422, "cart_empty")
    assert (extra.status_code, extra.json()["code"]) == (422, "validation_error")
    assert await cart.emitted(REQUESTED) == []
    # A refused attempt stores nothing: the same key works once the cart is filled.
    await cart.http.put(f"/carts/{cart_id}/lines/pkg-10", json={"quantity": 1}, headers=ALICE)
    assert (await cart.checkout(cart_id, "empty-cart")).status_code == 202


async def test_concurrent_double_click_with_one_key_makes_one_checkout(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1)

    responses = await asyncio.gather(*(cart.checkout(cart_id, "double-click") for _ in range(4)))

    assert [r.status_code for r in responses] == [202] * 4
    assert len({r.json()["checkout_id"] for r in responses}) == 1
    assert len(await cart.emitted(REQUESTED)) == 1


async def test_concurrent_checkouts_with_different_keys_check_out_once(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1)

    responses = await asyncio.gather(*(cart.checkout(cart_id, f"tab-{n}") for n in range(4)))

    assert sorted(r.status_code for r in responses) == [202, 409, 409, 409]
    assert len(await cart.emitted(REQUESTED)) == 1


async def test_someone_elses_checkout_is_not_found(cart: CartRig) -> None:
    cart_id = await cart.new_cart("alice", pkg_10=1)
    checkout_id = (await cart.checkout(cart_id, "mine")).json()["checkout_id"]

    response = await cart.http.get(f"/checkouts/{checkout_id}", headers=CartRig.as_user("bob"))

    assert (response.status_code, response.json()["code"]) == (404, "checkout_not_found")
