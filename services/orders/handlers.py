"""The orders service's message handlers: start a saga on checkout, advance it on each reply,
say an ended order's outcome again when the cart asks."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from services.orders import repository
from services.orders.saga.machine import REPLY_TYPES, react, start
from services.orders.saga.outcome import outcome_of
from services.orders.saga.runner import run_saga
from services.orders.saga.state import SagaState, Timing
from services.orders.saga.store import store_new_saga
from shared.dispatch import Handler, MessageContext
from shared.logging import log_fields
from shared.messages import Contract
from shared.messages import contracts as c

log = logging.getLogger("services.orders.handlers")


async def handle_checkout_requested(
    ctx: MessageContext, msg: c.CheckoutRequested, *, timing: Timing
) -> None:
    if await repository.saga_for_update(ctx.db, msg.checkout_id) is not None:
        return  # the same checkout arrived under a new message id: one saga per checkout
    now = datetime.now(UTC)
    decision = start(msg, now=now, timing=timing)
    await store_new_saga(ctx.db, msg, decision, now=now)
    for message in decision.send:
        await ctx.emit(message)


async def handle_saga_reply(ctx: MessageContext, msg: Contract, *, timing: Timing) -> None:
    order_id: str = msg.order_id  # type: ignore[attr-defined]  # every reply names its order
    # No saga yet raises SagaNotFound (a LookupError): retried, the reply overtook the start.
    await run_saga(
        ctx.db,
        order_id,
        lambda state, now: react(state, msg, now=now, timing=timing),
        emit=ctx.emit,
    )


async def handle_inquire_order(ctx: MessageContext, msg: c.InquireOrder) -> None:
    """The cart never heard how its checkout ended: say it again if the order ended before the
    question was asked.

    The read needs no lock: a reply ending the saga at this moment either committed first (the
    order then ended after the question) or sends the outcome itself."""
    found = await repository.saga_for_inquiry(ctx.db, msg.order_id)
    if found is None:
        # Its CheckoutRequested may still wait in the cart's outbox or a retry queue, or lie in
        # the DLQ, where the operator sees it; starting a saga from here could not know the
        # lines. The cart asks again after its interval.
        log.warning(
            "inquiry about an order orders does not know",
            extra=log_fields(order_id=msg.order_id, cart_id=msg.cart_id),
        )
        return
    state = SagaState.model_validate(found.state)
    # The reason the ending decision gave the order (`store_decision`); the column may be NULL,
    # though an ended order always has one, and the status then stands in for it.
    outcome = outcome_of(state, reason=found.status_reason or state.status.value)
    if outcome is None or found.status_changed_at > ctx.envelope.created_at:
        # Running: its outcome is yet to come. Ended since the question was asked (the question
        # waited out an outage, say): its outcome went out after the question, so it is not
        # the one the cart lost, and if it is lost too the next question is answered. (Two
        # services' clocks: a skew moves that line by as much, no more.)
        return
    # Seen in the log: each one is an outcome the cart lost, or one still queued for it.
    log.info("order outcome said again", extra=log_fields(order_id=msg.order_id))
    await ctx.emit(outcome)


def build_handlers(timing: Timing) -> Mapping[type[Contract], Handler]:
    reply = functools.partial(handle_saga_reply, timing=timing)
    handlers: dict[type[Contract], Handler] = {
        c.CheckoutRequested: functools.partial(handle_checkout_requested, timing=timing),
        c.InquireOrder: handle_inquire_order,
    }
    handlers.update({reply_type: reply for reply_type in REPLY_TYPES})
    return handlers
