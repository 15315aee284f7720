"""The orders service's message handlers: start a saga on checkout, advance it on each reply."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime

from services.orders import repository
from services.orders.saga.machine import REPLY_TYPES, react, start
from services.orders.saga.runner import run_saga
from services.orders.saga.state import Timing
from services.orders.saga.store import store_new_saga
from shared.dispatch import Handler, MessageContext
from shared.messages import Contract
from shared.messages import contracts as c


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


def build_handlers(timing: Timing) -> Mapping[type[Contract], Handler]:
    reply = functools.partial(handle_saga_reply, timing=timing)
    handlers: dict[type[Contract], Handler] = {
        c.CheckoutRequested: functools.partial(handle_checkout_requested, timing=timing)
    }
    handlers.update({reply_type: reply for reply_type in REPLY_TYPES})
    return handlers
