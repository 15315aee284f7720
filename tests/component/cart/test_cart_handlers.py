"""Order outcomes close or reopen the cart, once, however often they are delivered."""

from __future__ import annotations

from sqlalchemy import func, select

from services.cart.models import inbox
from shared.messages.contracts import CheckoutRequested, OrderCancelled, OrderCompleted
from tests.support.cart import CartRig

ALICE = CartRig.as_user("alice")


async def inbox_rows(cart: CartRig) -> int:
    async with cart.runtime.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(inbox)) or 0)


async def test_a_completed_order_checks_the_cart_out(cart: CartRig) -> None:
    cart_id, checkout_id = await cart.checking_out("k1", pkg_10=1, setup_job=1)
    done = OrderCompleted(order_id=checkout_id, cart_id=cart_id, status="completed")

    envelope = await cart.deliver(done, correlation_id=checkout_id)
    await cart.runtime.dispatcher(envelope)  # redelivery of the very same message

    assert await cart.checkout_state(cart_id, checkout_id) == ("checked_out", "completed", None)
    assert await inbox_rows(cart) == 1
    add = await cart.http.put(
        f"/carts/{cart_id}/lines/vps-small", json={"quantity": 1}, headers=ALICE
    )
    assert (add.status_code, add.json()["code"]) == (409, "cart_not_open")


async def test_a_partially_completed_order_is_recorded_as_such(cart: CartRig) -> None:
    cart_id, checkout_id = await cart.checking_out("k-partial", pkg_10=1, setup_job=1)

    await cart.deliver(
        OrderCompleted(order_id=checkout_id, cart_id=cart_id, status="partially_completed"),
        correlation_id=checkout_id,
    )

    assert await cart.checkout_state(cart_id, checkout_id) == (
        "checked_out",
        "partially_completed",
        None,
    )


async def test_a_cancelled_order_reopens_the_cart_for_another_try(cart: CartRig) -> None:
    cart_id, checkout_id = await cart.checking_out("k2", pkg_10=1, setup_job=1)

    await cart.deliver(
        OrderCancelled(order_id=checkout_id, cart_id=cart_id, reason="insufficient credits"),
        correlation_id=checkout_id,
    )

    assert await cart.checkout_state(cart_id, checkout_id) == (
        "open",
        "cancelled",
        "insufficient credits",
    )
    await cart.http.put(f"/carts/{cart_id}/lines/pkg-10", json={"quantity": 2}, headers=ALICE)
    retry = await cart.checkout(cart_id, "k2-retry", body={"use_credits": False})
    assert retry.status_code == 202
    assert retry.json()["checkout_id"] != checkout_id
    assert len(await cart.emitted(CheckoutRequested.TYPE)) == 2


async def test_a_late_duplicate_cancellation_does_not_reopen_the_next_checkout(
    cart: CartRig,
) -> None:
    cart_id, first_id = await cart.checking_out("k3", pkg_10=1, setup_job=1)
    cancelled = OrderCancelled(order_id=first_id, cart_id=cart_id, reason="payment expired")
    await cart.deliver(cancelled, correlation_id=first_id)
    second_id = (await cart.checkout(cart_id, "k3-retry")).json()["checkout_id"]

    # The same event again under a new message id: the inbox cannot tell, the checkout row can.
    await cart.deliver(cancelled, correlation_id=first_id)

    assert await cart.checkout_state(cart_id, second_id) == ("checking_out", "requested", None)
    assert (await cart.checkout_state(cart_id, first_id))[1:] == ("cancelled", "payment expired")


async def test_an_outcome_for_a_finished_checkout_changes_nothing(cart: CartRig) -> None:
    cart_id, checkout_id = await cart.checking_out("k4", pkg_10=1, setup_job=1)
    await cart.deliver(
        OrderCompleted(order_id=checkout_id, cart_id=cart_id, status="completed"),
        correlation_id=checkout_id,
    )

    await cart.deliver(
        OrderCancelled(order_id=checkout_id, cart_id=cart_id, reason="too late"),
        correlation_id=checkout_id,
    )
    await cart.deliver(
        OrderCompleted(order_id=checkout_id, cart_id=cart_id, status="partially_completed"),
        correlation_id=checkout_id,
    )

    assert await cart.checkout_state(cart_id, checkout_id) == ("checked_out", "completed", None)


async def test_an_outcome_for_an_unknown_order_is_ignored(cart: CartRig) -> None:
    await cart.deliver(
        OrderCancelled(order_id="not-ours", cart_id="nope", reason="?"), correlation_id="not-ours"
    )

    assert await inbox_rows(cart) == 1
