"""Admission control: while more messages than the bound wait in the saga services' queues, a new
checkout is refused with 503 checkout_busy and Retry-After; a retry of an accepted checkout is
still answered, and checkouts are taken again once the backlog drains."""

from __future__ import annotations

from shared.memory_bus import MemoryBus
from shared.messages.contracts import ORDERS
from tests.support.cart import MakeCart
from tests.support.waiting import eventually


async def test_new_checkouts_are_refused_while_the_saga_is_behind(make_cart: MakeCart) -> None:
    # Nothing consumes the orders queue here, so every accepted checkout stays in it.
    cart = await make_cart(admission_backlog=2, admission_refresh_seconds=0.001)
    bus = cart.runtime.bus
    assert isinstance(bus, MemoryBus)
    carts = [await cart.new_cart(pkg_10=1) for _ in range(4)]

    for i in range(3):
        assert (await cart.checkout(carts[i], key=f"k{i}")).status_code == 202
    await eventually(lambda: _pending(bus, 3))

    refused = await cart.checkout(carts[3], key="k3")
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["code"] == "checkout_busy"
    assert refused.json()["details"] == {"backlog": 3, "limit": 2}
    # The refused cart was not touched: it can still be edited and checked out later.
    assert (await cart.put_line(carts[3], "pkg-10", 2)).status_code == 200

    # A retry of an accepted checkout is answered from its record, backlog or not.
    replay = await cart.checkout(carts[0], key="k0")
    assert replay.status_code == 202

    # The saga catches up (here: the orders queue is emptied), and checkouts are taken again.
    while bus.pending(ORDERS):
        bus._queues[ORDERS].items.get_nowait()
    assert (await cart.checkout(carts[3], key="k3")).status_code == 202


async def test_admission_control_can_be_turned_off(make_cart: MakeCart) -> None:
    cart = await make_cart(admission_backlog=0, admission_refresh_seconds=0.001)
    carts = [await cart.new_cart(pkg_10=1) for _ in range(3)]
    for i, cart_id in enumerate(carts):
        assert (await cart.checkout(cart_id, key=f"k{i}")).status_code == 202


async def _pending(bus: MemoryBus, n: int) -> bool:
    return bus.pending(ORDERS) >= n
