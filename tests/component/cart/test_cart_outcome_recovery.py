"""A checkout whose outcome was lost (dead-lettered past the retry horizon, a purged queue)
used to leave its cart `checking_out` for good. The cart now asks orders about every checkout
still `requested` after `outcome_inquiry_after_seconds`, once per such interval, and the answer
finishes it like the outcome would have. The cart service in process (SQLite, in-process bus)."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.cart.models import utcnow
from services.cart.recovery import inquire_silent_checkouts
from shared.messages import Envelope
from shared.messages.contracts import InquireOrder, OrderCancelled, OrderCompleted
from tests.support.cart import CartRig, MakeCart
from tests.support.waiting import eventually

AFTER = timedelta(seconds=900)  # the default outcome_inquiry_after_seconds


async def inquiries(cart: CartRig) -> list[Envelope]:
    return await cart.emitted(InquireOrder.TYPE)


async def ask_at(cart: CartRig, now: datetime) -> list[str]:
    return await inquire_silent_checkouts(cart.runtime, now=now)


async def test_a_lost_completion_no_longer_leaves_the_cart_checking_out_forever(
    cart: CartRig,
) -> None:
    cart_id, checkout_id = await cart.checking_out("lost-completion")
    # The saga completed and announced it; that OrderCompleted never reached the cart.
    assert await ask_at(cart, utcnow() + AFTER - timedelta(seconds=5)) == []
    assert await cart.checkout_state(cart_id, checkout_id) == ("checking_out", "requested", None)

    assert await ask_at(cart, utcnow() + AFTER + timedelta(seconds=1)) == [checkout_id]

    [asked] = await inquiries(cart)
    assert asked.payload == {"order_id": checkout_id, "cart_id": cart_id}
    assert asked.correlation_id == checkout_id  # the checkout's trace id
    # Orders answers with the outcome again, under a message id of its own:
    answer = OrderCompleted(order_id=checkout_id, cart_id=cart_id, status="completed")
    await cart.deliver(answer, correlation_id=checkout_id)
    assert await cart.checkout_state(cart_id, checkout_id) == ("checked_out", "completed", None)


async def test_a_lost_cancellation_is_recovered_and_reopens_the_cart(cart: CartRig) -> None:
    cart_id, checkout_id = await cart.checking_out("lost-cancellation")

    assert await ask_at(cart, utcnow() + AFTER + timedelta(seconds=1)) == [checkout_id]
    answer = OrderCancelled(order_id=checkout_id, cart_id=cart_id, reason="payment expired")
    await cart.deliver(answer, correlation_id=checkout_id)

    assert await cart.checkout_state(cart_id, checkout_id) == (
        "open",
        "cancelled",
        "payment expired",
    )
    retry = await cart.checkout(cart_id, "lost-cancellation-retry")
    assert retry.status_code == 202, retry.text


async def test_an_asked_checkout_is_asked_again_only_after_another_full_interval(
    cart: CartRig,
) -> None:
    _, checkout_id = await cart.checking_out("asked-again")
    first = utcnow() + AFTER + timedelta(seconds=1)

    assert await ask_at(cart, first) == [checkout_id]
    assert await ask_at(cart, first + timedelta(seconds=60)) == []  # the next poll
    assert await ask_at(cart, first + AFTER - timedelta(seconds=1)) == []
    assert await ask_at(cart, first + AFTER) == [checkout_id]
    assert len(await inquiries(cart)) == 2


async def test_finished_checkouts_are_never_asked_about(cart: CartRig) -> None:
    completed_cart, completed = await cart.checking_out("finished-1")
    cancelled_cart, cancelled = await cart.checking_out("finished-2")
    for outcome in (
        OrderCompleted(order_id=completed, cart_id=completed_cart, status="completed"),
        OrderCancelled(order_id=cancelled, cart_id=cancelled_cart, reason="job rejected"),
    ):
        await cart.deliver(outcome, correlation_id=outcome.order_id)

    assert await ask_at(cart, utcnow() + 10 * AFTER) == []
    assert await inquiries(cart) == []


async def test_a_round_asks_about_at_most_a_batch_oldest_first(make_cart: MakeCart) -> None:
    cart = await make_cart(outcome_inquiry_batch=2)
    checkout_ids = [(await cart.checking_out(f"batch-{n}"))[1] for n in range(3)]
    later = utcnow() + AFTER + timedelta(seconds=1)

    assert sorted(await ask_at(cart, later)) == sorted(checkout_ids[:2])
    assert await ask_at(cart, later) == checkout_ids[2:]
    assert await ask_at(cart, later) == []


async def test_answers_said_twice_finish_the_checkout_once(cart: CartRig) -> None:
    # Two inquiries answered (or an answer crossing the original outcome): each is a new
    # message, so the inbox cannot tell; the checkout's `requested` status can.
    cart_id, checkout_id = await cart.checking_out("answered-twice")
    answer = OrderCompleted(order_id=checkout_id, cart_id=cart_id, status="completed")
    await cart.deliver(answer, correlation_id=checkout_id)
    await cart.deliver(answer, correlation_id=checkout_id)
    late = OrderCancelled(order_id=checkout_id, cart_id=cart_id, reason="timed out")
    await cart.deliver(late, correlation_id=checkout_id)

    assert await cart.checkout_state(cart_id, checkout_id) == ("checked_out", "completed", None)
    assert await ask_at(cart, utcnow() + 10 * AFTER) == []


async def test_the_cart_asks_by_itself_every_poll(make_cart: MakeCart) -> None:
    cart = await make_cart(outcome_inquiry_after_seconds=0.2, outcome_inquiry_poll_seconds=0.1)
    _, checkout_id = await cart.checking_out("background")

    async def asked() -> bool:
        return checkout_id in {e.payload["order_id"] for e in await inquiries(cart)}

    await eventually(asked, within=5)
