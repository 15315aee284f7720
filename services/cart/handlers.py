"""One async handler per message type the cart service consumes."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from services.cart import repository as repo
from shared.dispatch import Handler, MessageContext
from shared.logging import log_fields
from shared.messages import Contract
from shared.messages.contracts import OrderCancelled, OrderCompleted

log = logging.getLogger("services.cart.handlers")


async def handle_order_completed(ctx: MessageContext, msg: OrderCompleted) -> None:
    """The order is done: record its outcome and close the cart for good."""
    cart_id = await repo.finish_checkout(ctx.db, checkout_id=msg.order_id, status=msg.status)
    if cart_id is None:
        # Already finished (a duplicate under another message id) or not ours: no second effect.
        log.info("order outcome ignored", extra=log_fields(order_id=msg.order_id))
        return
    await repo.move_cart(ctx.db, cart_id=cart_id, from_status="checking_out", to="checked_out")


async def handle_order_cancelled(ctx: MessageContext, msg: OrderCancelled) -> None:
    """The order was rolled back: reopen the cart so the shopper can fix it and retry."""
    cart_id = await repo.finish_checkout(
        ctx.db, checkout_id=msg.order_id, status="cancelled", reason=msg.reason
    )
    if cart_id is None:
        log.info("order cancellation ignored", extra=log_fields(order_id=msg.order_id))
        return
    await repo.move_cart(ctx.db, cart_id=cart_id, from_status="checking_out", to="open")


HANDLERS: Mapping[type[Contract], Handler] = {
    OrderCompleted: handle_order_completed,
    OrderCancelled: handle_order_cancelled,
}
