"""The outcome an ended saga announces to the cart, in one place: what it sends as it ends
(`machine._finish`) and what it says again when the cart asks after a lost one
(`handlers.handle_inquire_order`) cannot drift apart. Pure."""

from __future__ import annotations

from services.orders.saga.state import TERMINAL, OrderStatus, SagaState, Step
from shared.messages import contracts as c

COMPLETED = frozenset({OrderStatus.COMPLETED, OrderStatus.PARTIALLY_COMPLETED})


def outcome_of(state: SagaState, *, reason: str) -> c.OrderCompleted | c.OrderCancelled | None:
    """`OrderCompleted` for a saga that ended completed or partially completed,
    `OrderCancelled` with `reason` for one that ended cancelled or refunded; None while it runs.
    A refund that failed ends the order, for the shopper's goods, as the refund would have.

    `reason` is the one the order ended with (its status reason): the state does not remember
    every ending's reason (a refund's is made as it ends). Ended means step `done`, not only a
    terminal status: a cancelled order refunding a payment that came late is `cancelled` but
    running again, and announces `refunded` once the refund is confirmed."""
    if state.step is not Step.DONE or state.status not in TERMINAL:
        return None
    ended = state.status_before_dispute or state.status  # a dispute changes no delivery
    delivered = state.after_refund if ended is OrderStatus.REFUND_FAILED else ended
    if delivered in COMPLETED:
        return c.OrderCompleted(
            order_id=state.order_id, cart_id=state.cart_id, status=delivered.value
        )
    return c.OrderCancelled(order_id=state.order_id, cart_id=state.cart_id, reason=reason)
